// A typed page of notify.js: every option, event, state and method, so
// that tsc --noEmit fails when notify.d.ts stops describing them, and a
// few misuses the declarations must reject (@ts-expect-error).
import { connect, NotifyClient, type ConnectOptions, type Envelope, type GapInfo, type HelloInfo, type State, type Transport } from "notify";

interface Customer {
  id: number;
  email: string;
}

const opts: ConnectOptions = {
  topics: ["customers"],
  since: 41,
  epoch: "9f2c",
  minDelay: 500,
  maxDelay: 30000,
  transport: "auto",
  token: async () => (await fetch("/token")).text(),
  keepAlive: 15000,
};
const n: NotifyClient = connect("/ws", opts);
connect("wss://api.example/ws", { transport: "sse", token: () => "t" });
connect("/ws", { transport: "websocket", token: () => null, keepAlive: 0 });
new NotifyClient("/ws");

n.on<Customer>("customer.created", (c, msg) => {
  const email: string = c.email;
  if (typeof msg !== "string") {
    const seq: number | undefined = msg.seq;
    const env: Envelope<Customer> = msg;
    console.log(email, seq, env.topic, env.time);
  }
})
  .on("text", (text) => console.log(text))
  .on("*", (data, msg) => console.log(data, msg))
  .on("notify.hello", (h: HelloInfo) => console.log(h.epoch, h.seq, h.keepalive))
  .on("notify.error", (e) => console.log(e.request, e.topic, e.error))
  .onGap((g: GapInfo) => console.log(g.reason, g.since, g.epoch, g.seq))
  .onState((s: State) => {
    switch (s) {
      case "connecting":
      case "open":
      case "closed":
        break;
      case "unauthorized":
        n.reconnect();
        break;
      default: {
        const never: never = s; // every state is handled above
        console.log(never);
      }
    }
  });

n.subscribe("orders");
n.unsubscribe("orders");
const sent: boolean = n.send({ type: "hello" });
n.send("text");
const t: Transport | null = n.transport;
const seq: number | null = n.seq;
const epoch: string | null = n.epoch;
const state: State = n.state;
const topics: Set<string> = n.topics;
console.log(sent, t, seq, epoch, state, topics);
n.reconnect();
n.close();

// @ts-expect-error: not a transport
connect("/ws", { transport: "longpoll" });
// @ts-expect-error: the token is a function, not the token
connect("/ws", { token: "t" });
// @ts-expect-error: not an option
connect("/ws", { retries: 3 });
// @ts-expect-error: not a state
const bad: State = "reconnecting";
console.log(bad);

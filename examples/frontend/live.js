// An account's history, then its new entries as they commit (see README.md beside this file).
//
// Read a page of `account.transactions`, then subscribe to `accountEntries` after the
// page's last cursor: the server sends every entry after that cursor, in the account's
// order, so an entry committed between the read and the subscription shows once, neither
// lost nor repeated. The subscription speaks graphql-transport-ws over the browser's own
// WebSocket; the protocol is small enough to write out here.

const PAGE_SIZE = 50;
const ENTRY = "id timestamp kind amount balanceAfter counterpartyId";
const HISTORY = `query History($account: ID!, $first: Int!, $after: String) {
  account(id: $account) {
    transactions(first: $first, after: $after) { edges { cursor node { ${ENTRY} } } }
  }
}`;
const LIVE = `subscription Live($account: ID!, $after: String) {
  accountEntries(accountId: $account, after: $after) { cursor node { ${ENTRY} } }
}`;
const OUTGOING = new Set(["TRANSFER_OUT", "PAYMENT", "MERGE_OUT"]);

const entries = document.getElementById("entries");
const balance = document.getElementById("balance");
const status = (text) => { document.getElementById("status").textContent = text; };

let feed = null; // the subscription shown now
let shown = 0; // counts each Show, so that an answer for an earlier one is dropped

document.getElementById("open").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id) => document.getElementById(id).value.trim();
  show(value("url"), value("key"), value("account"));
});

async function show(url, key, account) {
  feed?.stop();
  feed = null;
  const showing = ++shown;
  entries.replaceChildren();
  balance.textContent = "-";
  status("reading history");
  let page;
  try {
    page = await readPage(url, key, account);
  } catch (error) {
    if (showing === shown) status(error.message);
    return;
  }
  if (showing !== shown) return;
  page.forEach((edge) => append(edge.node, false));
  if (!page.length) balance.textContent = money(0);
  // No history, no cursor: subscribe from now on and, at the first event, read again (the
  // page then holds it, and any entry that came before the subscription started).
  const after = page.length ? page[page.length - 1].cursor : null;
  feed = subscribe({
    url, key, account, after,
    onEdge: (edge) => (after === null ? show(url, key, account) : append(edge.node, true)),
  });
}

async function readPage(url, key, account) {
  const answer = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
    body: JSON.stringify({ query: HISTORY, variables: { account, first: PAGE_SIZE, after: null } }),
  });
  const body = await answer.json();
  if (body.errors) throw new Error(body.errors.map((e) => e.message).join("; "));
  if (!body.data.account) throw new Error(`no account ${account}`);
  return body.data.account.transactions.edges;
}

// One subscription over graphql-transport-ws: the key goes in connection_init; after the
// server's connection_ack, subscribe; each `next` is an event, a `ping` wants a `pong`, and an
// `error` ends the subscription. A socket that closes is opened again and subscribes after
// the last cursor received, so a dropped connection loses nothing either.
function subscribe({ url, key, account, after, onEdge }) {
  let socket;
  let stopped = false;
  const send = (message) => socket.send(JSON.stringify(message));
  const end = (why) => { stopped = true; socket.close(); status(why); };

  function connect() {
    socket = new WebSocket(url.replace(/^http/, "ws"), "graphql-transport-ws");
    socket.onopen = () => send({ type: "connection_init", payload: { Authorization: `Bearer ${key}` } });
    socket.onmessage = ({ data }) => {
      const message = JSON.parse(data);
      if (message.type === "connection_ack") {
        send({ id: "live", type: "subscribe", payload: { query: LIVE, variables: { account, after } } });
        status("live");
      } else if (message.type === "ping") {
        send({ type: "pong" });
      } else if (message.type === "next") {
        const edge = message.payload.data.accountEntries;
        after = edge.cursor;
        onEdge(edge);
      } else if (message.type === "error") {
        const [error] = message.payload;
        if (error.extensions?.code === "SUBSCRIBER_TOO_SLOW") socket.close(); // resumes
        else end(`ended: ${error.extensions?.code}: ${error.message}`);
      } else if (message.type === "complete") {
        end("ended");
      }
    };
    socket.onclose = (event) => {
      if (stopped) return;
      if (event.code === 4403) return end("the key was refused");
      status("connection lost, reconnecting");
      setTimeout(() => stopped || connect(), 1000);
    };
  }

  connect();
  return { stop: () => { stopped = true; socket.close(); } };
}

function append(entry, arrived) {
  const row = document.createElement("tr");
  row.dataset.entryId = entry.id;
  if (arrived) row.className = "new";
  const sign = OUTGOING.has(entry.kind) ? "-" : "+";
  const cells = [
    [new Date(entry.timestamp).toISOString().replace("T", " ").slice(0, 19), ""],
    [entry.kind, ""],
    [entry.counterpartyId ?? "", ""],
    [sign + money(entry.amount), "money"],
    [money(entry.balanceAfter), "money"],
  ];
  for (const [text, kind] of cells) {
    const cell = row.insertCell();
    cell.textContent = text;
    cell.className = kind;
  }
  entries.append(row);
  balance.textContent = money(entry.balanceAfter);
}

// Money is an integer count of minor units: shown with two decimals by placing the point
// among its digits, never by dividing it as a float.
function money(amount) {
  const digits = String(amount).padStart(3, "0");
  return `${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

"""The GraphiQL page: our own HTML over the pinned files served next to it (nothing from
outside), the key bar, and a ready example to run. Queries and mutations go over HTTP,
subscriptions over graphql-transport-ws, both to the page's own URL."""

import html
import json
import logging

from starlette.responses import HTMLResponse

from bank_graphql.edge.graphiql_key import KEY_BAR
from bank_graphql.edge.playground import pins

log = logging.getLogger(__name__)

# Relative to the page (GET /graphql): right behind a proxy that mounts it under a prefix.
ASSET_PREFIX = "graphql/assets/"
SCRIPTS = (
    "react-18.3.1.min.js",
    "react-dom-18.3.1.min.js",
    "graphiql-3.8.3.min.js",
    "plugin-explorer-3.2.5.umd.js",
)
STYLES = ("graphiql-3.8.3.min.css", "plugin-explorer-3.2.5.css")

DEFAULT_DOCUMENT = """\
# The bank's GraphQL API. Give an API key (or a JWT) in the
# bar above, put the cursor in an operation and press
# Ctrl+Enter (or the run button). Money is an integer of minor
# units: 10000 is 100.00. The book icon shows the documentation.

query Accounts {
  accounts(first: 10) {
    nodes { id balance outgoing }
    pageInfo { hasNextPage endCursor }
  }
}

# Two accounts, and 100.00 into the first.
mutation Open {
  alice: createAccount(input: {id: "alice"}) {
    account { id createdAt }
    errors { code message }
  }
  bob: createAccount(input: {id: "bob"}) {
    account { id }
    errors { code message }
  }
  fund: deposit(input: {accountId: "alice", amount: 10000}) {
    balance
    errors { code message }
  }
}

mutation Move {
  transfer(input: {
    sourceAccountId: "alice", targetAccountId: "bob", amount: 2500
  }) {
    balance
    entry { id kind amount balanceAfter counterpartyId }
    errors { code message field }
  }
}

# Live: every ledger entry as it commits. Remove the # marks,
# run it, then run Move in another tab (the + above) and watch
# the entries arrive here.
#
# subscription Entries {
#   ledgerEntries {
#     cursor
#     node { id accountId kind amount balanceAfter }
#   }
# }
"""

_SCRIPT = """
      const DEFAULT_DOCUMENT = %(document)s;
      const fetchURL = window.location.href.split("#")[0].split("?")[0];
      const subscriptionURL = new URL(fetchURL);
      subscriptionURL.protocol = subscriptionURL.protocol === "https:" ? "wss:" : "ws:";
      function makeFetcher() {
        return GraphiQL.createFetcher({
          url: fetchURL,
          subscriptionUrl: subscriptionURL.toString(),
          fetch: bankFetch,
          wsConnectionParams: bankConnectionParams(),
        });
      }
      const explorer = GraphiQLPluginExplorer.explorerPlugin();
      const root = ReactDOM.createRoot(document.getElementById("graphiql"));
      function render() {
        // A new fetcher: GraphiQL fetches the schema again, a new websocket gets the key.
        root.render(
          React.createElement(GraphiQL, {
            fetcher: makeFetcher(),
            defaultQuery: DEFAULT_DOCUMENT,
            plugins: [explorer],
            defaultEditorToolsVisibility: true,
            inputValueDeprecation: true,
            isHeadersEditorEnabled: true,
            // Headers typed into GraphiQL may hold a key: not kept in localStorage.
            shouldPersistHeaders: false,
          }),
        );
      }
      window.addEventListener("bank-key-change", render);
      render();
"""

_PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>bank_graphql: GraphiQL</title>
    <link rel="icon" href="data:," />
%(styles)s
    <style>
      body { height: 100%%; margin: 0; width: 100%%; overflow: hidden; }
      #graphiql { height: 100vh; display: flex; }
    </style>
  </head>
  <body>%(bar)s
    <div id="graphiql" class="graphiql-container">Loading...</div>
%(scripts)s
    <script>%(script)s    </script>
  </body>
</html>
"""

_MISSING = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>bank_graphql: GraphiQL is not installed</title></head>
  <body style="font: 16px sans-serif; max-width: 48em; margin: 2em auto">
    <h1>GraphiQL's files are not installed</h1>
    <p>Missing: %(missing)s.</p>
    <p>They are downloaded from the npm registry and checked when the package is built or
    installed. Install it again (<code>pip install -e .</code>, or the wheel built with
    access to registry.npmjs.org or with %(env)s naming a folder of the pinned
    tarballs). The API itself answers at this URL as usual.</p>
  </body>
</html>
"""


def _json_in_script(value: str) -> str:
    # "</script>" (or "<!--") in the text must not end the script element early.
    return json.dumps(value).replace("<", "\\u003c")


def _build_page() -> str:
    styles = "\n".join(
        f'    <link rel="stylesheet" href="{ASSET_PREFIX}{name}" />' for name in STYLES
    )
    scripts = "\n".join(f'    <script src="{ASSET_PREFIX}{name}"></script>' for name in SCRIPTS)
    script = _SCRIPT % {"document": _json_in_script(DEFAULT_DOCUMENT)}
    return _PAGE % {"styles": styles, "bar": KEY_BAR, "scripts": scripts, "script": script}


PAGE = _build_page()


def playground_page() -> HTMLResponse:
    """The page; when the package was installed without its files, a page saying so (503)."""
    absent = pins.missing(pins.STATIC)
    if absent:
        log.warning("GraphiQL's files are not installed: %s", ", ".join(absent))
        body = _MISSING % {
            "missing": html.escape(", ".join(absent)),
            "env": f"<code>{pins.TARBALLS_ENV}</code>",
        }
        return HTMLResponse(body, status_code=503)
    return HTMLResponse(PAGE)

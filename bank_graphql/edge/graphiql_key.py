"""The GraphiQL page with a bar at the top to give an API key (or a JWT).

The key is kept in the tab's sessionStorage (gone when the tab closes) and sent as
`Authorization: Bearer <key>` with every request the page makes, and in the websocket's
`connection_init` payload. A header set in GraphiQL's own Headers editor wins.
"""

_BAR = """
    <style>
      #bank-key-bar { height: 36px; box-sizing: border-box; display: flex; gap: 8px;
        align-items: center; padding: 4px 12px; font: 14px sans-serif;
        background: #0b2545; color: #fff; }
      #bank-key-bar input { width: 32em; max-width: 60vw; }
      #graphiql { height: calc(100vh - 36px) !important; }
    </style>
    <form id="bank-key-bar" autocomplete="off" onsubmit="return false">
      <label for="bank-api-key">API key</label>
      <input id="bank-api-key" type="password" placeholder="bgk_... (or a JWT)"
             spellcheck="false" />
      <span id="bank-key-state"></span>
    </form>
    <script>
      (function () {
        const input = document.getElementById("bank-api-key");
        const state = document.getElementById("bank-key-state");
        function show() {
          state.textContent = input.value ? "sent as Authorization: Bearer" : "no key given";
        }
        input.value = sessionStorage.getItem("bankApiKey") || "";
        show();
        input.addEventListener("input", function () {
          sessionStorage.setItem("bankApiKey", input.value.trim());
          show();
        });
      })();
      function bankAuthorization() {
        const key = sessionStorage.getItem("bankApiKey");
        return key ? "Bearer " + key : null;
      }
      function bankFetch(url, init) {
        init = Object.assign({}, init);
        const headers = new Headers(init.headers || {});
        const authorization = bankAuthorization();
        if (authorization && !headers.has("Authorization")) {
          headers.set("Authorization", authorization);
        }
        init.headers = headers;
        return window.fetch(url, init);
      }
      function bankConnectionParams() {
        const authorization = bankAuthorization();
        return authorization ? { Authorization: authorization } : {};
      }
    </script>"""

_FETCHER_ANCHOR = """        headers: defaultHeaders,
        subscriptionUrl,
"""
_FETCHER_WITH_KEY = """        headers: defaultHeaders,
        subscriptionUrl,
        fetch: bankFetch,
        wsConnectionParams: bankConnectionParams,
"""


def with_key_bar(page: str) -> str:
    """Strawberry's GraphiQL page with the key bar; ValueError when the page is not the one
    this was written for (a Strawberry upgrade changed it)."""
    if "<body>" not in page or _FETCHER_ANCHOR not in page:
        raise ValueError("the GraphiQL page has changed: edge/graphiql_key.py must follow")
    page = page.replace("<body>", "<body>" + _BAR, 1)
    return page.replace(_FETCHER_ANCHOR, _FETCHER_WITH_KEY, 1)

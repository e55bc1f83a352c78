"""The bar at the top of the GraphiQL page where an API key (or a JWT) is given.

The key is kept in the tab's sessionStorage (gone when the tab closes) and sent as
`Authorization: Bearer <key>` with every request the page makes, and in the websocket's
`connection_init` payload. A header set in GraphiQL's own Headers editor wins. The page
(edge/playground/page.py) hands `bankFetch` and `bankConnectionParams` to its fetcher, and
makes a new fetcher on the `bank-key-change` event.
"""

KEY_BAR = """
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
        // On Enter or leaving the field: the page fetches the schema again with the key.
        input.addEventListener("change", function () {
          window.dispatchEvent(new Event("bank-key-change"));
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
        // GraphiQL copies this object for each subscription (a function would be lost in the
        // copy): the getter reads the key then. Undefined is left out of the JSON.
        return {
          get Authorization() { return bankAuthorization() || undefined; },
        };
      }
    </script>"""

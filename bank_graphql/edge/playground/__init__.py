"""The GraphiQL playground, served by the server itself: the page and its pinned files."""

from bank_graphql.edge.playground.assets import playground_routes
from bank_graphql.edge.playground.page import playground_page

__all__ = ["playground_page", "playground_routes"]

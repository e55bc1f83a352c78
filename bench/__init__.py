"""Load benchmark of bank_graphql: GraphQL transfers vs the same transaction in raw SQL.

Run it with `python -m bench.run --help`; bench/README.md has the commands and results.
"""

"""How each event of a subscription is executed.

graphql-core executes a subscription's selection set once per event and per subscriber, on
a copy of the subscription's executor. Two things change here:

- Each event gets its own cache of collected fields. The copies otherwise share one,
  keyed by lists built anew for every event, which grew by ~3 KiB an event for as long as
  the subscription lived.
- Subscribers of the same document and variables that receive the same event object get
  the same result, computed once: the fields of an event resolve from the event alone.
  Events are the same object only when they are the same entry shown the same way
  (api/subscription.py builds them through one cache).
"""

import json
from typing import Any

from cachetools import LRUCache
from graphql import ExecutionResult
from graphql.execution import Executor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

EVENT_RESULTS_MAX = 4096
_results: LRUCache[tuple[int, str, int], tuple[object, object, ExecutionResult]] = LRUCache(
    EVENT_RESULTS_MAX
)


class EventExecutor(StrawberryGraphQLCoreExecutionContext):
    _event = False

    def build_per_event_executor(self, payload: Any) -> Executor[Any]:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        executor._event = True  # type: ignore[attr-defined]
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        if not self._event:
            return super().execute_operation(serially)
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=repr)
        key = (id(self.operation), variables, id(self.root_value))
        found = _results.get(key)
        # The key's objects are kept alive with the result: their ids cannot be reused.
        if found is not None and found[0] is self.operation and found[1] is self.root_value:
            return found[2]
        result = super().execute_operation(serially)
        if isinstance(result, ExecutionResult):
            _results[key] = (self.operation, self.root_value, result)
        return result

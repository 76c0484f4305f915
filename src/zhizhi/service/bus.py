"""The in-process message bus: commands go to exactly one handler, events to any number.

An event type may also have a *batch* handler: the bus then hands it every queued
event of that type at once, so a batch of reports is triaged in one transaction
instead of one each. A single report goes through the very same handler with a
list of one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from zhizhi.domain.events import Event
from zhizhi.service.commands import Command
from zhizhi.service.uow import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[..., Any]


class MessageBus:
    """Runs a command, then every event it caused (and the events those caused), in order."""

    def __init__(self, uow: UnitOfWork, command_handlers: dict[type[Command], Handler],
                 event_handlers: dict[type[Event], list[Handler]],
                 batch_handlers: dict[type[Event], Handler] | None = None) -> None:
        self.uow = uow
        self.command_handlers = command_handlers
        self.event_handlers = event_handlers
        self.batch_handlers = batch_handlers or {}
        self.listeners: list[Callable[[Event], None]] = []

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback(event)` with every event after its handlers ran (the change is committed by then).

        For observers such as the console's live hub: a listener never changes the flow, and its errors are
        logged, not raised. Returns a function that removes the listener.
        """
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback) if callback in self.listeners else None

    def handle(self, command: Command) -> Any:
        handler = self.command_handlers[type(command)]
        result = handler(command)  # errors propagate to the caller: nothing was committed
        self._drain()
        return result

    def publish(self, events: list[Event]) -> None:
        """Run the handlers of events committed outside a unit of work (alarms stored in bulk)."""
        self.uow._pending_events.extend(events)
        self._drain()

    def _drain(self) -> None:
        queue: list[Event] = list(self.uow.collect_new_events())
        while queue:
            event = queue.pop(0)
            kind = type(event)
            handled = [event]
            if kind in self.batch_handlers:
                batch = [event, *(e for e in queue if type(e) is kind)]
                queue = [e for e in queue if type(e) is not kind]
                self._run(self.batch_handlers[kind], batch, event)
                handled = batch
            for handler in self.event_handlers.get(kind, []):
                self._run(handler, event, event)
            for done in handled if self.listeners else ():
                for listener in list(self.listeners):
                    self._run(listener, done, done)
            queue.extend(self.uow.collect_new_events())

    @staticmethod
    def _run(handler: Handler, arg: Any, event: Event) -> None:
        try:
            handler(arg)
        except Exception:
            # The command already committed; a failing follow-up must not undo it.
            # The case stays where it is (e.g. in the dispatcher's queue) and the error is logged.
            log.exception("handler %s failed for %s", getattr(handler, "__name__", handler), event)

"""Admission control: a bounded priority queue in front of a counting semaphore.

At most ``max_running`` exports render at once; up to ``max_queue`` more wait, highest priority
first and FIFO within a priority. A job that finds the queue full is refused at once with
ResourceExhausted (and a retry hint) instead of waiting invisibly. Waiting jobs can read their
1-based position at any time, so the servicer can tell clients as they move up.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from .errors import ResourceExhausted, Unavailable


@dataclass(eq=False)
class Ticket:
    """A job's place with the governor: queued until ``admitted``, then holding a slot until
    ``release``. Safe to release or cancel more than once."""

    job_id: str
    priority: int
    seq: int
    tenant: str = ""
    admitted: bool = False
    done: bool = False
    _governor: Governor | None = field(default=None, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until admitted or ``timeout`` passes; True when admitted."""
        assert self._governor is not None
        return self._governor._wait(self, timeout)

    @property
    def position(self) -> int:
        """1-based queue position while waiting, 0 once admitted (or gone)."""
        assert self._governor is not None
        return self._governor._position(self)

    def release(self) -> None:
        """Give the slot back (when admitted) or leave the queue (when still waiting)."""
        assert self._governor is not None
        self._governor._release(self)


class Governor:
    """Bounds concurrent exports and queues the rest by priority."""

    def __init__(
        self, max_running: int, max_queue: int, *, max_running_per_tenant: int | None = None
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        self.max_running = max_running
        self.max_queue = max_queue
        self.max_running_per_tenant = max_running_per_tenant
        self._cond = threading.Condition()
        self._waiting: list[Ticket] = []  # kept sorted: highest priority first, then FIFO
        self._running: set[Ticket] = set()
        self._seq = itertools.count()
        self._closed = False

    def enqueue(self, job_id: str, priority: int = 0, *, tenant: str = "") -> Ticket:
        """Admit at once when a slot is free, else queue; ResourceExhausted when full."""
        with self._cond:
            ticket = Ticket(job_id, priority, next(self._seq), tenant, _governor=self)
            if self._closed:
                # UNAVAILABLE, not RESOURCE_EXHAUSTED: this server will not take it at any
                # time, so the client should retry against another one.
                raise Unavailable(
                    "the server is shutting down and accepts no new exports",
                    reason="SHUTTING_DOWN",
                )
            if len(self._waiting) >= self.max_queue and not self._can_start(ticket):
                raise ResourceExhausted(
                    f"the export queue is full ({self.max_running} running, "
                    f"{len(self._waiting)} waiting); retry later",
                    reason="QUEUE_FULL",
                    retry_after=self._retry_hint(),
                )
            self._waiting.append(ticket)
            self._waiting.sort(key=lambda t: (-t.priority, t.seq))
            self._dispatch()
            return ticket

    @property
    def running(self) -> int:
        """Exports holding a slot now."""
        with self._cond:
            return len(self._running)

    @property
    def queued(self) -> int:
        """Exports waiting now."""
        with self._cond:
            return len(self._waiting)

    def close(self) -> None:
        """Refuse every new export from now on (shutdown) with Unavailable (``SHUTTING_DOWN``);
        running and queued ones carry on."""
        with self._cond:
            self._closed = True

    def _retry_hint(self) -> float:
        return 1.0 + 0.5 * len(self._waiting) / max(1, self.max_running)

    def _running_for(self, tenant: str) -> int:
        return sum(1 for t in self._running if t.tenant == tenant)

    def _can_start(self, ticket: Ticket) -> bool:
        """Whether a newcomer would run at once: a free slot and nobody already waiting."""
        if self._waiting or len(self._running) >= self.max_running:
            return False
        cap = self.max_running_per_tenant
        return cap is None or self._running_for(ticket.tenant) < cap

    def _dispatch(self) -> None:
        """Move waiting tickets into free slots, in queue order (caller holds the lock)."""
        changed = False
        for ticket in list(self._waiting):
            if len(self._running) >= self.max_running:
                break
            cap = self.max_running_per_tenant
            if cap is not None and self._running_for(ticket.tenant) >= cap:
                continue
            self._waiting.remove(ticket)
            self._running.add(ticket)
            ticket.admitted = True
            changed = True
        if changed:
            self._cond.notify_all()

    def _wait(self, ticket: Ticket, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: ticket.admitted or ticket.done, timeout) and (
                ticket.admitted and not ticket.done
            )

    def _position(self, ticket: Ticket) -> int:
        with self._cond:
            try:
                return self._waiting.index(ticket) + 1
            except ValueError:
                return 0

    def _release(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.done:
                return
            ticket.done = True
            if ticket in self._running:
                self._running.discard(ticket)
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._dispatch()
            self._cond.notify_all()

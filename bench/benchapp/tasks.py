"""The benchmark's tasks: a no-op, one Redis INCR (the work every peer is given), a stamp."""

from peers import work

from django_bgtasks import background_task


@background_task
def noop(i: int) -> None:
    """Do nothing: measures the queue's own overhead."""


@background_task
def incr(i: int) -> None:
    """One INCR on a counter the benchmark watches."""
    work.incr()


@background_task
def stamp(kind: str, ref: float) -> None:
    """Record the start time against ``ref`` (enqueue or due time) for the latency figures."""
    work.stamp(kind, ref)

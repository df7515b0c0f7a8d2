"""A GPU worker stops itself only after its head has been gone for the whole grace period."""

from __future__ import annotations

import socket

from serve_app.provisioning.node_watchdog import HeadWatch, head_reachable


def test_only_an_unbroken_absence_of_the_grace_period_stops_the_worker() -> None:
    watch = HeadWatch(grace_s=600)
    assert not watch.observe(False, now=0)
    assert not watch.observe(False, now=599)
    assert not watch.observe(True, now=600)  # the head came back: the count starts over
    assert not watch.observe(False, now=700)
    assert not watch.observe(False, now=1299)
    assert watch.observe(False, now=1300)


def test_a_listening_port_is_reachable_and_a_closed_one_is_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert head_reachable(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not head_reachable(f"127.0.0.1:{closed}", timeout_s=2)

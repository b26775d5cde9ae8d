"""The test clock's stored time, shared by every process on the database."""

from __future__ import annotations

from piccolo.columns import Integer, Timestamptz
from piccolo.table import Table


class ClockState(Table, tablename="clock_state"):
    id = Integer(primary_key=True)
    now = Timestamptz()

"""Analytics: a columnar snapshot of the case store in DuckDB, and the indicator roll-ups over it.

Why a snapshot and not a live query: DuckDB's SQLite and PostgreSQL scanners are extensions it downloads
at run time, which an offline centre cannot do; and scanning the system of record for every chart would
compete with intake. So cases (and sensing alarms, where that table exists) are copied incrementally by
`updated_at` into a DuckDB file beside the database, and every roll-up runs there.
"""

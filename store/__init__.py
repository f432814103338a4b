"""Runtime state that must survive restarts and be shared by replicas: migrations,
their audit trail, pooled outcome windows, the controller lease and kill switches; and
records kept for a retention time (stored responses, plan-and-execute runs) and bounded
sample lists (requests captured for replay, judged pairs kept as examples).

Two backends behind one small interface (`store.base.Store`): embedded SQLite (the
default; also shared by the workers of one host) and Redis (shared by replicas).
`memory` is for tests.
"""

"""The HTTP edge: one pipeline per inbound dialect, read top to bottom in pipeline.py.

    authenticate -> read -> parse (dialects/) -> resolve alias -> decide arm -> fit context
    -> dispatch -> relay (relay.py) -> record (record.py)

app.py is the route table (proxy paths to pipelines, the rest to FastAPI: models,
health, metrics, /admin); wiring.py builds every part once from the config and
hands each only what it uses. The CLI, the server runner and the demo live here too.
"""

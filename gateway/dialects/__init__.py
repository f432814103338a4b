"""Inbound dialect adapters: what a client speaks, turned into the gateway's canonical request and back.

    base.py        the seam: `InboundDialect` (parse, answer, stream frames, errors) and `ClientRequest`
    openai.py      what the OpenAI-dialect endpoints share: body checks, the error envelope, passthrough answers
    chat.py        POST /v1/chat/completions, the canonical dialect itself (passthrough both ways)
    embeddings.py  POST /v1/embeddings (passthrough)

A dialect that is not canonical (the Responses API, legacy completions, Anthropic's
Messages) parses its body into a canonical chat payload and renders the canonical
answer, and its stream events, back in its own shape; the pipeline does not change.
"""

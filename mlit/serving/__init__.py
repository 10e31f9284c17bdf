"""The serving stack: every model of a run (and a self-hosted judge) behind an OpenAI-compatible
API on Ray Serve. One room, a module per layer, from the outside in:

    app            ServeConfig; the app built, started and stopped (`mlit serve`, a sweep's phases)
    gateway        the HTTP ingress: auth, limits, validation, errors, routing to a model's shard
    protocol       the OpenAI API subset: request schemas, response and error bodies
    shards         how the gateway reaches a shard's model server: through Serve, or, where the
                   app has one hf replica and one shard, run in the gateway's own replica
    model_server   the model server: models in an LRU per replica, one engine
    preparation    a request as a job for any engine (templating, token ids, context checks)
    engines/       the engine interface and its implementations: hf (with its continuous-batching
                   scheduler) and vLLM; `engines.create` is the one place that picks one

One request: HTTP -> gateway (auth, parse, validate, the model's shard) -> shards (a plain call,
or Serve's handle) -> model_server (its LRU loads the model through the engine, preparation makes
the job) -> engine (tokens as sampled) -> model_server (events) -> gateway (a response body or
server-sent events).

Only `mlit.plumbing.ingress` is imported here (the standard library's modules alone), for the environment
of Serve's HAProxy ingress: the planner imports `mlit.planning.engine_choice` without starting Ray
Serve. `serve run` configs name
``mlit.serving.app:app_builder``.
"""

from mlit.plumbing import ingress

# Serve reads its environment once, as `ray.serve` is first imported: in every replica, and in the
# driver too, where the handles to the model servers are made (their transport and router loop
# come from the driver's reading). Set before anything here imports Serve: with the driver's
# reading taken before `ingress.install`, the gateway and the model server used 5.7 and 4.0 ms of
# CPU per request instead of 3.3 and 2.4 (benchmarks/serve_load.py).
ingress.install()

"""The detection service's web layer: the app factory (app.py), one router per resource (routes/), their
dependencies (deps.py), the request and error schemas (schemas.py), the read model the listings and
stories come from (views.py), the dashboard's summary (summary.py), the live events (live.py) and the
POSTs' idempotency (idempotency.py). Routes call the domain (till, controls, scenario, the read model);
they never talk to a store themselves.
"""

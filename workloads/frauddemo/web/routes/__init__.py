"""One router per resource, each a module-level `router` (app.py includes them all under /api)."""

from . import alerts, controls, events, photos, purchases, returns, stores

ROUTERS = [
    stores.router,
    controls.router,
    purchases.router,
    returns.router,
    alerts.router,
    photos.router,
    events.router,
]

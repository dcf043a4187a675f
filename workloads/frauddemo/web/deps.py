"""The routes' dependencies, as typed aliases: `demo: DemoDep` is the read model of the app serving the
request, `viewer: PhotoViewerDep` whether the caller may see photo links. Each app keeps its own state
(app.state.web, a WebState), so two apps in one process never share a summary, a lock or a token."""

from __future__ import annotations

import dataclasses
import threading
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..photos.access import PhotoAccess, PhotoDenied
from .summary import Summary
from .views import Demo


@dataclasses.dataclass
class WebState:
    """What the routes of one app share: the read model, the summary's tallies, who may see photos,
    and the reset's lock (one reset at a time)."""

    demo: Demo
    photo_access: PhotoAccess
    summary: Summary = dataclasses.field(default_factory=Summary)
    reset_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def web_state(request: Request) -> WebState:
    return request.app.state.web


def demo(request: Request) -> Demo:
    return request.app.state.web.demo


def summary(request: Request) -> Summary:
    return request.app.state.web.summary


def may_see_photos(request: Request) -> bool:
    """The caller may open photos (photos/access.py): the routes then include photo links."""
    return request.app.state.web.photo_access.allowed(request.scope, request.headers.get("authorization"))


def photo_viewer(request: Request) -> None:
    """Photos only for an authorised viewer (401 no token, 403 wrong token or not allowed here)."""
    try:
        request.app.state.web.photo_access.check(request.scope, request.headers.get("authorization"))
    except PhotoDenied as e:
        raise HTTPException(
            e.status, e.reason, headers={"WWW-Authenticate": 'Bearer realm="frauddemo"'} if e.status == 401 else None
        ) from None


WebStateDep = Annotated[WebState, Depends(web_state)]
DemoDep = Annotated[Demo, Depends(demo)]
SummaryDep = Annotated[Summary, Depends(summary)]
PhotoViewerDep = Annotated[bool, Depends(may_see_photos)]

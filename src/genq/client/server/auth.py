"""Who is asking: every API request names a user with `Authorization: Bearer TOKEN`.

- A user's token (`client users add`) is that user: they see and change only their own jobs and
  groups, unless they are an admin. A revoked token, or one no user has, is a 401.
- The home's token (GENQ_UI_TOKEN, else GENQ_HOME/ui/token, the dashboard's) is the operator: an
  admin whose jobs are owned by GENQ_USER ("local"). With no users defined it is the only way in,
  and the dashboard's cookie carries it too.
"""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse

from genq.client.ui.security import TOKEN_COOKIE, same_page, same_token
from genq.core.store.users import UserStore

bearer = HTTPBearer(auto_error=False, description="A user's API token (`client users add NAME`), or this home's "
                                                  "token (GENQ_HOME/ui/token) for its owner")


@dataclass(frozen=True)
class Principal:
    """The user a request acts for: jobs they submit are owned by `name`; an admin sees everyone's."""

    name: str
    admin: bool


class TokenInAddress(Exception):
    """`?token=` with the home's token: answered by setting the dashboard's cookie and coming back without it."""

    def __init__(self, response: RedirectResponse) -> None:
        self.response = response


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    state = request.app.state
    token = credentials.credentials if credentials is not None else request.cookies.get(TOKEN_COOKIE)
    if token is None:
        if same_token(request.query_params.get("token"), state.operator_token):
            response = RedirectResponse(same_page(request), status_code=303)
            response.set_cookie(TOKEN_COOKIE, state.operator_token, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            raise TokenInAddress(response)
        raise unauthorized("a token is required: Authorization: Bearer TOKEN")
    if same_token(token, state.operator_token):
        return Principal(state.client.settings.user, admin=True)
    users: UserStore = state.users
    user = users.by_token(token)
    if user is None:
        raise unauthorized("this token belongs to no user")
    if user.revoked_at is not None:
        raise unauthorized("this token was revoked")
    return Principal(user.name, user.admin)

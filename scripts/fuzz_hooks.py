"""schemathesis hooks for scripts/fuzz-api.sh: give most generated requests the realistic data
the test server has, so they reach the sync logic instead of stopping at a check of data no
generator can guess (schemathesis's documented way to supply existing ids):
- the user the script connected (user123) as `user_id`, except on disconnect (which acts on
  another user, so the connection lasts the whole run);
- the memory calendar's account (user/secret) on `/apple/connect` (wrong credentials are the
  API tests' business: tests/api);
- no `cursor` (an opaque token the server seals; a generated one is refused by design).
A quarter of the cases keep their generated values, so unknown users, wrong passwords and
forged cursors stay covered."""

import itertools

import schemathesis

USER = "user123"
_draws = itertools.count()


def _pick(value):
    # Deterministic for a fixed seed (cases come in the same order): three in four replaced.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    return next(_draws) % 4 != 0


def _fix_hours(week):
    # "start before end" is a rule JSON Schema cannot state: order most generated ranges.
    for ranges in week.values() if isinstance(week, dict) else ():
        for r in ranges if isinstance(ranges, list) else ():
            if isinstance(r, dict) and isinstance(r.get("start"), str) and isinstance(r.get("end"), str):
                if r["start"] >= r["end"] and _pick(r["start"]):
                    r["start"], r["end"] = "09:00", "17:00"


def _path(ctx):
    operation = getattr(ctx, "operation", None)
    return getattr(operation, "path", "") or ""


@schemathesis.hook
def map_body(ctx, body):
    if not isinstance(body, dict):
        return body
    if _pick(body.get("user_id")):
        body["user_id"] = USER
    if _path(ctx).endswith("/apple/connect") and isinstance(body.get("apple_id"), str):
        body["apple_id"], body["app_password"] = "user", "secret"
        body.pop("server_url", None)
    if _pick(body.get("cursor")):
        body.pop("cursor")
    if isinstance(body.get("working_hours"), dict):
        _fix_hours(body["working_hours"])
    return body


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    if "/disconnect/" in _path(ctx):
        # The documents' own example is user123: disconnect someone else, so the connection
        # every other request relies on lasts the whole run.
        if isinstance(path_parameters, dict) and path_parameters.get("user_id") == USER:
            path_parameters["user_id"] = "user-disconnected-by-fuzzing"
        return path_parameters
    if isinstance(path_parameters, dict) and _pick(path_parameters.get("user_id")):
        path_parameters["user_id"] = USER
    return path_parameters

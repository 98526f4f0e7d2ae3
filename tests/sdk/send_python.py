"""Sends one known story through the real PostHog and Segment Python SDKs.

Usage: send_python.py HOST WRITE_KEY

For each SDK (prefixes `py-posthog`, `py-segment`): 5 events as an anonymous
visitor, an identify that joins the visitor to a user (with $set), 5 events
as the user, 3 events from a second device, an alias that merges the
second device's person into the user's, then a group identify of the user's
company `<prefix>-acme` (name Acme, 5 seats). Every "sdk event" carries its index
`i` and the client name, so the test can check each arrives exactly once.
Any SDK error fails the program.
"""

import sys

from posthog import Posthog
from segment.analytics.client import Client as Segment

host, key = sys.argv[1], sys.argv[2]
failures = []


def on_error(error, items):
    failures.append(f"{error!r} for {len(items)} items")


def posthog_story(prefix, posthog):
    anon, user, device2 = f"{prefix}-anon", f"{prefix}-user", f"{prefix}-device2"
    props = lambda i: {"i": i, "client": prefix, "nested": {"ok": True}}
    for i in range(5):
        posthog.capture("sdk event", distinct_id=anon, properties=props(i))
    posthog.capture(
        "$identify",
        distinct_id=user,
        properties={"$anon_distinct_id": anon, "$set": {"email": f"{prefix}@example.com"}},
    )
    for i in range(5, 10):
        posthog.capture("sdk event", distinct_id=user, properties=props(i))
    for i in range(10, 13):
        posthog.capture("sdk event", distinct_id=device2, properties=props(i))
    posthog.alias(previous_id=device2, distinct_id=user)
    posthog.group_identify(
        "company", f"{prefix}-acme", {"name": "Acme", "seats": 5}, distinct_id=user
    )


def segment_story(prefix, segment):
    anon, user, device2 = f"{prefix}-anon", f"{prefix}-user", f"{prefix}-device2"
    props = lambda i: {"i": i, "client": prefix, "nested": {"ok": True}}
    for i in range(5):
        segment.track(anonymous_id=anon, event="sdk event", properties=props(i))
    segment.identify(user_id=user, anonymous_id=anon, traits={"email": f"{prefix}@example.com"})
    for i in range(5, 10):
        segment.track(user_id=user, event="sdk event", properties=props(i))
    for i in range(10, 13):
        segment.track(anonymous_id=device2, event="sdk event", properties=props(i))
    segment.alias(previous_id=device2, user_id=user)
    segment.group(user_id=user, group_id=f"{prefix}-acme", traits={"name": "Acme", "seats": 5})


# Batched (the SDK's background thread, flushed at shutdown), not sync_mode:
# that is how applications run it.
posthog = Posthog(key, host=host, on_error=on_error, flush_at=4, max_retries=3)
posthog_story("py-posthog", posthog)
posthog.flush()
posthog.shutdown()

segment = Segment(key, host=host, on_error=on_error, upload_size=4, max_retries=3)
segment_story("py-segment", segment)
segment.flush()
segment.shutdown()

if failures:
    sys.exit("SDK errors: " + "; ".join(failures))
print("sent")

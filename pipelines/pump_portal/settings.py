"""Constants of the Pump Portal Integration API v1 and the defaults this sync chooses for it."""

API_PREFIX = "/v1"

# The reference's own example pages by 50; a larger page is not promised to be accepted,
# and a rejected limit is a 400 (invalid_pagination), not something to discover in production.
DEFAULT_PAGE_SIZE = 50

# (connect, read) seconds. The summary endpoint aggregates a week of data server-side.
DEFAULT_TIMEOUT = (5.0, 60.0)
# Connecting is quick or not at all; a slow answer gets the read timeout (dlt's
# `[runtime] request_timeout`, or the source's `request_timeout`).
CONNECT_TIMEOUT = 5.0

# Transient failures (5xx, connection errors, bodies that are not the expected JSON) are
# retried with doubling, jittered waits while a request's time budget lasts, and at most this
# many times. Under 30% failing answers a request still fails after 8 retries about once in
# 150,000 (0.3 ** 9); a portal that is down costs each request at most the budget.
DEFAULT_MAX_RETRIES = 8
DEFAULT_RETRY_SECONDS = 60.0
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

# Detail calls (per pump, per user) that fail after their retries are skipped and asked again
# next run; this many failing in a row, with none succeeding, means the portal is down, not
# flaky: the run stops (exit 4) instead of spending the retry budget on every item.
MAX_FAILED_ITEMS_IN_A_ROW = 25

# 429 is never a failure on its own: the client waits Retry-After and tries again.
# This caps one single wait so a bogus header cannot park the job for a day.
MAX_RETRY_AFTER_SECONDS = 900.0
# Used when a 429 carries no usable Retry-After.
DEFAULT_RETRY_AFTER_SECONDS = 1.0
# A request is given up only after this many consecutive 429s (hours of waiting at the cap).
MAX_RATE_LIMITED_ATTEMPTS = 100

# Listing pages requested ahead of the one being read (once `pagination.pages` is known) follow
# the concurrency, `concurrency - 1`: a listing read alone has as many requests in flight as the
# detail calls. A fixed 4 kept every run's listing walk (read before any detail call; 40 pages at
# 2,000 pumps) at 5 in flight: ~0.2 s of an unchanged fleet's ~1.5 s run at 20 ms latency.

# Walks of one listing (GET /v1/pumps, each GET /v1/users/:userId/summary) per run. A walk that
# saw the listing move under it (counts changed, an item on two pages, fewer distinct items than
# `total`, a short page before the last) is walked again; after this many walks the listing is
# the union of what they saw, flagged incomplete, and the next run settles it (pagination.py).
MAX_LISTING_WALKS = 3

# Concurrent per-pump / per-user detail requests. 16 measured fastest on 2 cores (`make
# bench-speed`: 8.6 s against 14.1 s at 8, 2,000 pumps at 20 ms); more in flight never asks the
# portal faster than its rate budget, which every worker shares (pacing.py).
DEFAULT_CONCURRENCY = 16

# Details (metadata, summary) are refetched at least this often even for a pump that has not
# reported, so the summary's `today` block rolls over.
DEFAULT_DETAILS_MAX_AGE_HOURS = 24.0

# Pages beyond the announced `pagination.pages` we are willing to follow while `has_next` stays
# true: a listing can grow while it is paged, but a server that never stops must not loop us.
EXTRA_PAGES_ALLOWED = 10

ENDPOINT_PUMPS = "/pumps"
ENDPOINT_STATS = "/stats"
ENDPOINT_DELEGATED_USERS = "/delegated-users"
ENDPOINT_USER_SUMMARY = "/users/{user_id}/summary"
ENDPOINT_PUMP_METADATA = "/pumps/{pump_id}/metadata"
ENDPOINT_PUMP_SUMMARY = "/pumps/{pump_id}/summary"

-- One row per change of a pump's presence in the listing: first listed, vanished, listed again.
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    pump_id,
    is_visible,
    changed_at,

    -- the dlt load that wrote the row (incremental builds read new loads only)
    _dlt_load_id as load_id

from {{ source('controller_visibility') }}

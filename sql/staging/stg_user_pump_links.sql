-- One row per period in which a delegated user saw a pump (unlinked_at is null while current).
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    user_id,
    pump_id,

    -- booleans
    is_owner,

    -- timestamps: the syncs that first saw the link and first missed it
    valid_from as linked_at,
    valid_to as unlinked_at,

    -- the dlt load that wrote the row (incremental builds read new loads only)
    _dlt_load_id as load_id

from {{ source('user_pump_links') }}

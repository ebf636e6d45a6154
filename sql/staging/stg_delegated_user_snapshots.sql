-- One row per delegated user per sync: that user's statistics at the sync's time.
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    user_id,

    -- text
    name as user_name,

    -- numerics
    total_controllers,
    active_controllers,
    offline_controllers,
    total_water_delivered,
    average_battery_soc,
    wireguard_connections,

    -- timestamps
    snapshot_at,

    -- the dlt load that wrote the row (incremental builds read new loads only)
    _dlt_load_id as load_id

from {{ source('delegated_user_snapshots') }}

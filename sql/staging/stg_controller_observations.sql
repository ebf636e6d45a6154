-- One row per pump per reading: each new last_seen a sync saw (raw `controller_observations`).
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    pump_id,

    -- text
    pump__status as pump_status,
    highest_alarm_level,

    -- numerics (units are the API's)
    pump__total_water_delivered as total_water_delivered,
    battery__voltage as battery_voltage,
    battery__soc as battery_soc,
    battery__current as battery_current,
    current_pressure,
    active_alarms_count,
    total_sessions,
    uptime as uptime_seconds,

    -- booleans
    pump__running as is_running,

    -- timestamps
    last_seen as last_seen_at,
    last_heartbeat as last_heartbeat_at,
    observed_at,

    -- the dlt load that wrote the row (incremental builds read new loads only)
    _dlt_load_id as load_id

from {{ source('controller_observations') }}

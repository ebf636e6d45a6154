-- One row per pump the portal ever listed: its latest state (raw `controllers`, merged on pump_id).
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    pump_id,

    -- text
    custom_name as controller_name,
    profile,
    communication_method,
    installation__installation_name as installation_name,
    installation__location_name as location_name,
    pump__status as pump_status,
    highest_alarm_level,

    -- numerics (units are the API's)
    installation__lat as latitude,
    installation__lon as longitude,
    pump__total_water_delivered as total_water_delivered,
    battery__voltage as battery_voltage,
    battery__soc as battery_soc,
    battery__current as battery_current,
    current_pressure,
    active_alarms_count,
    total_sessions,
    uptime as uptime_seconds,

    -- booleans
    is_owner as has_delegated_owner,
    pump__running as is_running,

    -- timestamps
    last_seen as last_seen_at,
    last_heartbeat as last_heartbeat_at,
    listed_at as changed_at

from {{ source('controllers') }}

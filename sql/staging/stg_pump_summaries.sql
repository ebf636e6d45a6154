-- One row per fetch of GET /v1/pumps/:pumpId/summary (raw `pump_summaries`, appended per fetch).
-- One select, no import CTE: PostgreSQL merges a view without a WITH clause into the query
-- that reads it, so joins through it can use the raw table's indexes.

select
    -- ids
    _dlt_id as pump_summary_id,
    pump_id,

    -- text
    data_source,

    -- numerics (units are the API's)
    live_data__current_pressure as live_current_pressure,
    live_data__battery_soc as live_battery_soc,
    live_data__battery_voltage as live_battery_voltage,
    today__snapshot_count as today_snapshot_count,
    recent_alarms__count as recent_alarm_count,
    recent_alarms__critical as recent_critical_alarm_count,
    recent_alarms__warning as recent_warning_alarm_count,
    week_trends__total_water_delivered as week_water_delivered,
    week_trends__avg_pressure as week_average_pressure,
    week_trends__avg_battery_soc as week_average_battery_soc,
    week_trends__avg_uptime as week_average_uptime_seconds,

    -- dates
    today__date as today_date,

    -- timestamps
    live_data__last_updated as live_updated_at,
    last_updated as updated_at,
    fetched_at,

    -- the dlt load that wrote the row (incremental builds read new loads only)
    _dlt_load_id as load_id

from {{ source('pump_summaries') }}

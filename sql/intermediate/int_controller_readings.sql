-- One row per pump per reading, with the water delivered since the pump's previous reading.
-- materialized: table (three daily marts read it; the window over all readings runs once per build)
--
-- Readings are ordered as the syncs saw them (observed_at, then last_seen_at), so a device clock
-- that jumps back cannot reorder the counter. A pump's first reading ever delivers nothing (it is
-- the baseline); a counter that went down was reset, and its new value is what was delivered since.

with

observations as (

    select * from {{ ref('stg_controller_observations') }}

),

with_previous as (

    select
        *,
        -- partitioning on "is null" makes lag() step over readings without a value
        lag(total_water_delivered) over (
            partition by pump_id, total_water_delivered is null
            order by observed_at, last_seen_at
        ) as previous_total_water_delivered,
        lag(uptime_seconds) over (
            partition by pump_id, uptime_seconds is null
            order by observed_at, last_seen_at
        ) as previous_uptime_seconds
    from observations

),

readings as (

    select
        pump_id,
        {{ local_date('last_seen_at') }} as reading_date,
        {{ local_date('observed_at') }} as observed_date,
        last_seen_at,
        observed_at,
        total_water_delivered,
        case
            when previous_total_water_delivered is null then 0
            when total_water_delivered >= previous_total_water_delivered
                then total_water_delivered - previous_total_water_delivered
            else greatest(total_water_delivered, 0)
        end as water_delivered,
        coalesce(uptime_seconds < previous_uptime_seconds, false) as is_reboot,
        uptime_seconds,
        battery_soc,
        current_pressure,
        active_alarms_count
    from with_previous

)

select * from readings

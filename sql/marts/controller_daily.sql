-- One row per pump per day (in the configured time zone), from the day the pump was first listed or
-- read until today, or until the day it vanished from the listing.
-- materialized: table (as a view: 2.5 s on DuckDB, 41 s on Postgres per query; sql/README.md)

with

days as (

    select * from {{ ref('int_calendar_days') }}

),

readings as (

    select * from {{ ref('int_controller_readings') }}

),

visibility as (

    select * from {{ ref('stg_controller_visibility') }}

),

snapshots as (

    select * from {{ ref('stg_fleet_snapshots') }}

),

visibility_ranked as (

    select
        pump_id,
        is_visible,
        changed_at,
        {{ local_date('changed_at') }} as changed_date,
        row_number() over (partition by pump_id order by changed_at desc) as recency,
        row_number() over (
            partition by pump_id, {{ local_date('changed_at') }}
            order by changed_at desc
        ) as recency_in_day
    from visibility

),

pump_spans as (

    select
        visibility_ranked.pump_id,
        min(visibility_ranked.changed_date) as first_listed_date,
        max(
            case
                when visibility_ranked.recency = 1 and not visibility_ranked.is_visible
                    then visibility_ranked.changed_date
            end
        ) as vanished_date
    from visibility_ranked
    group by visibility_ranked.pump_id

),

first_readings as (

    select
        pump_id,
        min(reading_date) as first_reading_date
    from readings
    group by pump_id

),

pump_days as (

    select
        pump_spans.pump_id,
        days.day_date
    from pump_spans
    left join first_readings
        on pump_spans.pump_id = first_readings.pump_id
    inner join days
        on days.day_date >= least(
            pump_spans.first_listed_date,
            coalesce(first_readings.first_reading_date, pump_spans.first_listed_date)
        )
        and (pump_spans.vanished_date is null or days.day_date <= pump_spans.vanished_date)

),

daily_readings as (

    select
        pump_id,
        reading_date as day_date,
        count(*) as observation_count,
        sum(water_delivered) as water_delivered,
        min(battery_soc) as battery_soc_min,
        avg(battery_soc) as battery_soc_avg,
        max(battery_soc) as battery_soc_max,
        avg(current_pressure) as current_pressure_avg,
        max(active_alarms_count) as active_alarms_max,
        sum(case when is_reboot then 1 else 0 end) as reboot_count,
        max(last_seen_at) as last_reading_at
    from readings
    group by pump_id, reading_date

),

day_last_syncs as (

    select
        {{ local_date('snapshot_at') }} as day_date,
        max(snapshot_at) as last_sync_at
    from snapshots
    group by {{ local_date('snapshot_at') }}

),

-- What each day's syncs last saw of a pump: its last_seen, and whether it was listed.
-- Readings and visibility changes are stamped with sync times, so the latest one observed on or
-- before a day is the state at that day's last sync.
observed_last_seen as (

    select
        pump_id,
        observed_date,
        last_seen_at,
        row_number() over (
            partition by pump_id, observed_date
            order by observed_at desc, last_seen_at desc
        ) as recency_in_day
    from readings

),

-- day_date is never null: "nulls first" only keeps these frames translatable to BigQuery.
pump_day_state_dates as (

    select
        pump_days.pump_id,
        pump_days.day_date,
        max(observed_last_seen.observed_date) over (
            partition by pump_days.pump_id
            order by pump_days.day_date nulls first
            rows between unbounded preceding and current row
        ) as seen_state_date,
        max(visibility_ranked.changed_date) over (
            partition by pump_days.pump_id
            order by pump_days.day_date nulls first
            rows between unbounded preceding and current row
        ) as visibility_state_date
    from pump_days
    left join observed_last_seen
        on pump_days.pump_id = observed_last_seen.pump_id
        and pump_days.day_date = observed_last_seen.observed_date
        and observed_last_seen.recency_in_day = 1
    left join visibility_ranked
        on pump_days.pump_id = visibility_ranked.pump_id
        and pump_days.day_date = visibility_ranked.changed_date
        and visibility_ranked.recency_in_day = 1

),

pump_day_states as (

    select
        pump_day_state_dates.pump_id,
        pump_day_state_dates.day_date,
        day_last_syncs.last_sync_at,
        observed_last_seen.last_seen_at as last_seen_at_last_sync,
        case
            when day_last_syncs.last_sync_at is not null
                then coalesce(visibility_ranked.is_visible, false)
        end as is_listed
    from pump_day_state_dates
    left join day_last_syncs
        on pump_day_state_dates.day_date = day_last_syncs.day_date
    left join observed_last_seen
        on pump_day_state_dates.pump_id = observed_last_seen.pump_id
        and pump_day_state_dates.seen_state_date = observed_last_seen.observed_date
        and observed_last_seen.recency_in_day = 1
    left join visibility_ranked
        on pump_day_state_dates.pump_id = visibility_ranked.pump_id
        and pump_day_state_dates.visibility_state_date = visibility_ranked.changed_date
        and visibility_ranked.recency_in_day = 1

),

final as (

    select
        pump_day_states.pump_id,
        pump_day_states.day_date,
        coalesce(daily_readings.observation_count, 0) as observation_count,
        coalesce(daily_readings.water_delivered, 0) as water_delivered,
        daily_readings.battery_soc_min,
        daily_readings.battery_soc_avg,
        daily_readings.battery_soc_max,
        daily_readings.current_pressure_avg,
        daily_readings.active_alarms_max,
        coalesce(daily_readings.reboot_count, 0) as reboot_count,
        daily_readings.last_reading_at,
        pump_day_states.last_sync_at,
        pump_day_states.is_listed,
        -- online at the day's last sync: listed, and seen within the online threshold before it
        case
            when pump_day_states.last_sync_at is not null
                then coalesce(
                    pump_day_states.is_listed
                    and pump_day_states.last_seen_at_last_sync
                    >= pump_day_states.last_sync_at - {{ online_threshold }},
                    false
                )
        end as is_online
    from pump_day_states
    left join daily_readings
        on pump_day_states.pump_id = daily_readings.pump_id
        and pump_day_states.day_date = daily_readings.day_date

)

select * from final

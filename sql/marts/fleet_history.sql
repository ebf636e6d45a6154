-- One row per day (in the configured time zone) from the first sync's day: the fleet's statistics
-- at the day's last sync and the water delivered that day.
-- materialized: incremental
-- unique_key: day_date
--
-- An incremental build recomputes the days of new syncs, the days new readings are dated into and
-- the days the calendar grew by (sql/README.md).

with

days as (

    select * from {{ ref('int_calendar_days') }}

),

snapshots as (

    select * from {{ ref('stg_fleet_snapshots') }}

),

readings as (

    select * from {{ ref('int_controller_readings') }}

),

{% if is_incremental() %}

new_readings as (

    select * from {{ new_rows('int_controller_readings') }}

),

new_snapshots as (

    select * from {{ new_rows('stg_fleet_snapshots') }}

),

changed_days as (

    select {{ local_date('snapshot_at') }} as day_date
    from new_snapshots

    union all

    select reading_date as day_date
    from new_readings

    union all

    -- the days the calendar grew by
    select days.day_date
    from days
    where
        days.day_date > (select max(day_date) from {{ this }})
        or days.day_date < (select min(day_date) from {{ this }})
        or not exists (select 1 from {{ this }})

),

scope as (

    select days.day_date
    from days
    where days.day_date in (select day_date from changed_days)

),

{% else %}

scope as (

    select * from days

),

{% endif %}

daily_snapshots as (

    select
        *,
        {{ local_date('snapshot_at') }} as day_date,
        row_number() over (
            partition by {{ local_date('snapshot_at') }}
            order by snapshot_at desc
        ) as recency_in_day
    from snapshots

),

snapshot_days as (

    select
        day_date,
        count(*) as snapshot_count,
        avg(average_battery_soc) as average_battery_soc
    from daily_snapshots
    group by day_date

),

last_snapshots as (

    select *
    from daily_snapshots
    where recency_in_day = 1

),

-- Per-pump deltas: a pump joining or leaving the fleet changes the portal's lifetime total,
-- not the water delivered.
daily_water as (

    select
        readings.reading_date as day_date,
        count(distinct readings.pump_id) as reporting_controllers,
        sum(readings.water_delivered) as water_delivered
    from readings
    inner join scope
        on readings.reading_date = scope.day_date
    -- a range PostgreSQL seeks in its index (DuckDB skips row groups by the join alone)
    where readings.reading_date >= (select min(day_date) from scope)
    group by readings.reading_date

),

final as (

    select
        scope.day_date,
        coalesce(snapshot_days.snapshot_count, 0) as snapshot_count,
        last_snapshots.total_controllers,
        last_snapshots.active_controllers,
        last_snapshots.offline_controllers,
        coalesce(daily_water.reporting_controllers, 0) as reporting_controllers,
        coalesce(daily_water.water_delivered, 0) as water_delivered,
        snapshot_days.average_battery_soc,
        last_snapshots.wireguard_connections,
        last_snapshots.snapshot_at as last_sync_at
    from scope
    left join snapshot_days
        on scope.day_date = snapshot_days.day_date
    left join last_snapshots
        on scope.day_date = last_snapshots.day_date
    left join daily_water
        on scope.day_date = daily_water.day_date

)

select * from final

-- One row per pump per day (in the configured time zone), from the day the pump was first listed or
-- read until today, or until the day it vanished from the listing.
-- materialized: incremental
-- unique_key: pump_id, day_date
--
-- An incremental build recomputes each pump from the first day new data can change: the days of
-- its new readings (dated and observed) and of the pump it re-derived, of its new visibility
-- changes, and, for every pump, the days of new syncs and those the calendar grew by (sql/README.md).

with

days as (

    select * from {{ ref('int_calendar_days') }}

),

readings as (

    select * from {{ ref('int_controller_readings') }}

),

observed_days as (

    select * from {{ ref('int_controller_observed_days') }}

),

reading_tails as (

    select * from {{ ref('int_controller_reading_tails') }}

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

pump_days as (

    select
        pump_spans.pump_id,
        days.day_date
    from pump_spans
    left join reading_tails
        on pump_spans.pump_id = reading_tails.pump_id
    inner join days
        on days.day_date >= least(
            pump_spans.first_listed_date,
            coalesce(reading_tails.first_reading_date, pump_spans.first_listed_date)
        )
        and (pump_spans.vanished_date is null or days.day_date <= pump_spans.vanished_date)

),

pump_first_days as (

    select
        pump_id,
        min(day_date) as first_day
    from pump_days
    group by pump_id

),

{% if is_incremental() %}

new_readings as (

    select * from {{ new_rows('int_controller_readings') }}

),

new_visibility as (

    select * from {{ new_rows('stg_controller_visibility') }}

),

new_snapshots as (

    select * from {{ new_rows('stg_fleet_snapshots') }}

),

existing as (

    select * from {{ this }}

),

-- Every pump changes from the first day of a new sync on (the day's last sync says whether it
-- was listed and online), and gets the days the calendar grew by.
fleet_from as (

    select
        least(
            (select min({{ local_date('snapshot_at') }}) from new_snapshots),
            (select cast(max(day_date) + interval '1 day' as date) from existing)
        ) as from_date

),

pump_changes as (

    select
        pump_id,
        least(
            min(reading_date),
            min(observed_date),
            min({{ local_date('_derived_from_at') }})
        ) as from_date
    from new_readings
    group by pump_id

    union all

    select
        pump_id,
        min({{ local_date('changed_at') }}) as from_date
    from new_visibility
    group by pump_id

),

pump_from as (

    select
        pump_spans.pump_id,
        least(min(fleet_from.from_date), min(pump_changes.from_date)) as from_date
    from pump_spans
    cross join fleet_from
    left join pump_changes
        on pump_spans.pump_id = pump_changes.pump_id
    group by pump_spans.pump_id

),

scope as (

    select pump_days.*
    from pump_days
    inner join pump_from
        on pump_days.pump_id = pump_from.pump_id
    where pump_days.day_date >= pump_from.from_date

),

{% else %}

scope as (

    select * from pump_days

),

{% endif %}

scope_starts as (

    select
        scope.pump_id,
        min(scope.day_date) as from_date,
        min(pump_first_days.first_day) as first_day
    from scope
    inner join pump_first_days
        on scope.pump_id = pump_first_days.pump_id
    group by scope.pump_id

),

daily_readings as (

    select
        readings.pump_id,
        readings.reading_date as day_date,
        count(*) as observation_count,
        sum(readings.water_delivered) as water_delivered,
        min(readings.battery_soc) as battery_soc_min,
        avg(readings.battery_soc) as battery_soc_avg,
        max(readings.battery_soc) as battery_soc_max,
        avg(readings.current_pressure) as current_pressure_avg,
        max(readings.active_alarms_count) as active_alarms_max,
        -- DuckDB sums integers into a HUGEINT, which BI drivers read poorly
        cast(sum(case when readings.is_reboot then 1 else 0 end) as bigint) as reboot_count,
        max(readings.last_seen_at) as last_reading_at
    from readings
    inner join scope
        on readings.pump_id = scope.pump_id
        and readings.reading_date = scope.day_date
    -- a range PostgreSQL seeks in its index (DuckDB skips row groups by the join alone); the
    -- days again as a semi-join, so that an empty scope (a build with nothing new) reads nothing
    -- instead of joining a year of readings before the range's null empties them
    where
        readings.reading_date >= (select min(day_date) from scope)
        and readings.reading_date in (select day_date from scope)
    group by readings.pump_id, readings.reading_date

),

day_last_syncs as (

    select
        {{ local_date('snapshot_at') }} as day_date,
        max(snapshot_at) as last_sync_at
    from snapshots
    group by {{ local_date('snapshot_at') }}

),

-- What each day's syncs last saw of a pump: its last_seen, and whether it was listed. Readings
-- and visibility changes are stamped with sync times, so the latest one observed on or before a
-- day (from the pump's first day on) is the state at that day's last sync. Days before the scope
-- (an incremental build's) hand their latest observed day over as a baseline.
seen_baselines as (

    select
        observed_days.pump_id,
        max(observed_days.observed_date) as observed_date
    from observed_days
    inner join scope_starts
        on observed_days.pump_id = scope_starts.pump_id
    where
        observed_days.observed_date >= scope_starts.first_day
        and observed_days.observed_date < scope_starts.from_date
    group by observed_days.pump_id

),

-- day_date is never null: "nulls first" only keeps these frames translatable to BigQuery.
scope_seen_dates as (

    select
        scope.pump_id,
        scope.day_date,
        max(observed_days.observed_date) over (
            partition by scope.pump_id
            order by scope.day_date nulls first
            rows between unbounded preceding and current row
        ) as seen_state_date
    from scope
    left join observed_days
        on scope.pump_id = observed_days.pump_id
        and scope.day_date = observed_days.observed_date

),

visibility_days as (

    select *
    from visibility_ranked
    where recency_in_day = 1

),

scope_visibility_dates as (

    select
        scope.pump_id,
        scope.day_date,
        max(visibility_days.changed_date) as visibility_state_date
    from scope
    inner join scope_starts
        on scope.pump_id = scope_starts.pump_id
    left join visibility_days
        on scope.pump_id = visibility_days.pump_id
        and visibility_days.changed_date <= scope.day_date
        and visibility_days.changed_date >= scope_starts.first_day
    group by scope.pump_id, scope.day_date

),

pump_day_states as (

    select
        scope_seen_dates.pump_id,
        scope_seen_dates.day_date,
        day_last_syncs.last_sync_at,
        observed_days.last_seen_at as last_seen_at_last_sync,
        case
            when day_last_syncs.last_sync_at is not null
                then coalesce(visibility_days.is_visible, false)
        end as is_listed
    from scope_seen_dates
    left join seen_baselines
        on scope_seen_dates.pump_id = seen_baselines.pump_id
    inner join scope_visibility_dates
        on scope_seen_dates.pump_id = scope_visibility_dates.pump_id
        and scope_seen_dates.day_date = scope_visibility_dates.day_date
    left join day_last_syncs
        on scope_seen_dates.day_date = day_last_syncs.day_date
    left join observed_days
        on scope_seen_dates.pump_id = observed_days.pump_id
        and coalesce(scope_seen_dates.seen_state_date, seen_baselines.observed_date)
        = observed_days.observed_date
    left join visibility_days
        on scope_visibility_dates.pump_id = visibility_days.pump_id
        and scope_visibility_dates.visibility_state_date = visibility_days.changed_date

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

{% if is_incremental() %}

-- Rows in a recomputed range that no longer exist: the pump vanished before them.
, stale_rows as (

    select existing.*
    from existing
    inner join pump_from
        on existing.pump_id = pump_from.pump_id
    left join scope
        on existing.pump_id = scope.pump_id
        and existing.day_date = scope.day_date
    where
        existing.day_date >= pump_from.from_date
        and scope.pump_id is null

)

select
    *,
    false as _removed
from final

union all

select
    *,
    true as _removed
from stale_rows

{% else %}

select * from final

{% endif %}

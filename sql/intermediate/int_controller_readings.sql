-- One row per pump per reading, with the water delivered since the pump's previous reading.
-- materialized: incremental
-- unique_key: pump_id, last_seen_at
-- index: reading_date, pump_id
-- index: _build_id
--
-- Readings are ordered as the syncs saw them (observed_at, then last_seen_at), so a device clock
-- that jumps back cannot reorder the counter. A pump's first reading ever delivers nothing (it is
-- the baseline); a counter that went down was reset, and its new value is what was delivered since.
--
-- An incremental build derives only the new observations, each pump's previous counters taken
-- from its tail (int_controller_reading_tails as the last build left it). An observation that
-- does not sort after its pump's tail (loaded late, or replayed with a key already read) makes
-- the build re-derive that pump from there on. Bookkeeping for the models downstream: _build_id
-- (the build that wrote the row), _derived_from_at and _is_rederived (where that build started
-- deriving the pump, and whether that was at or before its old tail).

with

observations as (

    select * from {{ ref('stg_controller_observations') }}

),

{% if is_incremental() %}

new_observations as (

    select * from {{ new_rows('stg_controller_observations') }}

),

tails as (

    select * from {{ previous('int_controller_reading_tails') }}

),

-- A replayed observation replaces the reading with its key, wherever that one sorted. (The
-- existing readings are read in place, not through a CTE: DuckDB would copy all of them.)
replaced_readings as (

    select
        existing_readings.pump_id,
        existing_readings.observed_at,
        existing_readings.last_seen_at
    from {{ this }} as existing_readings
    inner join new_observations
        on existing_readings.pump_id = new_observations.pump_id
        and existing_readings.last_seen_at = new_observations.last_seen_at

),

changed_positions as (

    select
        pump_id,
        observed_at,
        last_seen_at
    from new_observations

    union all

    select
        pump_id,
        observed_at,
        last_seen_at
    from replaced_readings

),

ranked_positions as (

    select
        *,
        row_number() over (
            partition by pump_id
            order by observed_at, last_seen_at
        ) as position_rank
    from changed_positions

),

-- Where each pump's derivation starts, and whether that is at or before its old tail.
starts as (

    select
        ranked_positions.pump_id,
        ranked_positions.observed_at as start_observed_at,
        ranked_positions.last_seen_at as start_last_seen_at,
        coalesce(
            ranked_positions.observed_at < tails.last_observed_at
            or (
                ranked_positions.observed_at = tails.last_observed_at
                and ranked_positions.last_seen_at <= tails.last_seen_at
            ),
            false
        ) as is_rederived,
        tails.last_total_water_delivered,
        tails.last_uptime_seconds
    from ranked_positions
    left join tails
        on ranked_positions.pump_id = tails.pump_id
    where ranked_positions.position_rank = 1

),

rederived_starts as (

    select *
    from starts
    where is_rederived

),

-- A re-derived pump's readings before its start: they hold the counters it starts from.
rederived_history as (

    select
        existing_readings.pump_id,
        existing_readings.total_water_delivered,
        existing_readings.uptime_seconds,
        row_number() over (
            partition by existing_readings.pump_id, existing_readings.total_water_delivered is null
            order by existing_readings.observed_at desc, existing_readings.last_seen_at desc
        ) as total_recency,
        row_number() over (
            partition by existing_readings.pump_id, existing_readings.uptime_seconds is null
            order by existing_readings.observed_at desc, existing_readings.last_seen_at desc
        ) as uptime_recency
    from {{ this }} as existing_readings
    inner join rederived_starts
        on existing_readings.pump_id = rederived_starts.pump_id
    where
        existing_readings.observed_at < rederived_starts.start_observed_at
        or (
            existing_readings.observed_at = rederived_starts.start_observed_at
            and existing_readings.last_seen_at < rederived_starts.start_last_seen_at
        )

),

rederived_counters as (

    select
        pump_id,
        max(case when total_recency = 1 then total_water_delivered end)
            as last_total_water_delivered,
        max(case when uptime_recency = 1 then uptime_seconds end) as last_uptime_seconds
    from rederived_history
    group by pump_id

),

start_counters as (

    select
        starts.pump_id,
        starts.start_observed_at,
        starts.start_last_seen_at,
        starts.is_rederived,
        case
            when starts.is_rederived then rederived_counters.last_total_water_delivered
            else starts.last_total_water_delivered
        end as start_total_water_delivered,
        case
            when starts.is_rederived then rederived_counters.last_uptime_seconds
            else starts.last_uptime_seconds
        end as start_uptime_seconds
    from starts
    left join rederived_counters
        on starts.pump_id = rederived_counters.pump_id

),

-- The new observations of pumps read after their tail, and every observation of a re-derived
-- pump from its start on.
derived_observations as (

    select new_observations.*
    from new_observations
    inner join starts
        on new_observations.pump_id = starts.pump_id
    where not starts.is_rederived

    union all

    select observations.*
    from observations
    inner join rederived_starts
        on observations.pump_id = rederived_starts.pump_id
    where
        observations.observed_at > rederived_starts.start_observed_at
        or (
            observations.observed_at = rederived_starts.start_observed_at
            and observations.last_seen_at >= rederived_starts.start_last_seen_at
        )

),

with_previous as (

    select
        derived_observations.*,
        start_counters.start_observed_at as derived_from_at,
        start_counters.is_rederived,
        -- lag() within the derived rows; their first one follows the pump's start counters
        case
            when derived_observations.total_water_delivered is not null
                then coalesce(
                    lag(derived_observations.total_water_delivered) over (
                        partition by
                            derived_observations.pump_id,
                            derived_observations.total_water_delivered is null
                        order by derived_observations.observed_at, derived_observations.last_seen_at
                    ),
                    start_counters.start_total_water_delivered
                )
        end as previous_total_water_delivered,
        case
            when derived_observations.uptime_seconds is not null
                then coalesce(
                    lag(derived_observations.uptime_seconds) over (
                        partition by
                            derived_observations.pump_id,
                            derived_observations.uptime_seconds is null
                        order by derived_observations.observed_at, derived_observations.last_seen_at
                    ),
                    start_counters.start_uptime_seconds
                )
        end as previous_uptime_seconds
    from derived_observations
    inner join start_counters
        on derived_observations.pump_id = start_counters.pump_id

),

{% else %}

with_previous as (

    select
        *,
        cast(null as timestamptz) as derived_from_at,
        false as is_rederived,
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

{% endif %}

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
        active_alarms_count,

        -- bookkeeping
        cast({{ build_id }} as bigint) as _build_id,
        derived_from_at as _derived_from_at,
        is_rederived as _is_rederived
    from with_previous

)

select * from readings
{% if is_incremental() %}{% else %}
-- in day order, so that DuckDB skips the row groups of other days in incremental builds
order by reading_date, pump_id
{% endif %}

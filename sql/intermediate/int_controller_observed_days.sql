-- One row per pump per day (in the configured time zone) on which a sync read it: the last reading
-- those syncs saw, and the earliest day any of the day's readings is dated into.
-- materialized: incremental
-- unique_key: pump_id, observed_date
--
-- controller_daily carries the last reading forward to tell whether a pump was online at a day's
-- last sync; user_history bounds the days a link change can touch with the earliest reading day.

with

readings as (

    select * from {{ ref('int_controller_readings') }}

),

{% if is_incremental() %}

new_readings as (

    select * from {{ new_rows('int_controller_readings') }}

),

-- A re-derived pump (rare) is recomputed from the day its derivation started.
rederived_from as (

    select
        pump_id,
        min({{ local_date('_derived_from_at') }}) as from_date
    from new_readings
    where _is_rederived
    group by pump_id

),

new_days as (

    select distinct
        pump_id,
        observed_date
    from new_readings
    where not _is_rederived

),

-- A pump read after its tail: the days' rows so far and the new readings. A re-derived pump:
-- all its readings from its start's day on.
candidate_readings as (

    select
        pump_id,
        observed_date,
        observed_at,
        last_seen_at,
        reading_date as first_reading_date
    from new_readings
    where not _is_rederived

    union all

    select
        existing.pump_id,
        existing.observed_date,
        existing.observed_at,
        existing.last_seen_at,
        existing.first_reading_date
    from {{ this }} as existing
    inner join new_days
        on existing.pump_id = new_days.pump_id
        and existing.observed_date = new_days.observed_date

    union all

    select
        readings.pump_id,
        readings.observed_date,
        readings.observed_at,
        readings.last_seen_at,
        readings.reading_date as first_reading_date
    from readings
    inner join rederived_from
        on readings.pump_id = rederived_from.pump_id
    where readings.observed_date >= rederived_from.from_date

),

{% else %}

candidate_readings as (

    select
        pump_id,
        observed_date,
        observed_at,
        last_seen_at,
        reading_date as first_reading_date
    from readings

),

{% endif %}

ranked as (

    select
        *,
        row_number() over (
            partition by pump_id, observed_date
            order by observed_at desc, last_seen_at desc
        ) as recency_in_day,
        min(first_reading_date) over (
            partition by pump_id, observed_date
        ) as earliest_reading_date
    from candidate_readings

),

observed_days as (

    select
        pump_id,
        observed_date,
        observed_at,
        last_seen_at,
        earliest_reading_date as first_reading_date,
        cast({{ build_id }} as bigint) as _build_id
    from ranked
    where recency_in_day = 1

)

{% if is_incremental() %}

-- A re-derived pump's days that no longer have a reading (a replay moved it to another day).
, stale_days as (

    select existing.*
    from {{ this }} as existing
    inner join rederived_from
        on existing.pump_id = rederived_from.pump_id
    left join observed_days
        on existing.pump_id = observed_days.pump_id
        and existing.observed_date = observed_days.observed_date
    where
        existing.observed_date >= rederived_from.from_date
        and observed_days.pump_id is null

)

select
    *,
    false as _removed
from observed_days

union all

select
    *,
    true as _removed
from stale_days

{% else %}

select * from observed_days

{% endif %}

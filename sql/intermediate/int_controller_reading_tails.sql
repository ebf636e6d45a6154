-- One row per pump with readings: where its last reading sorts, its last counters, and the first
-- and last day of its readings. Bookkeeping for incremental readings and the calendar's end.
-- materialized: incremental
-- unique_key: pump_id

with

readings as (

    select * from {{ ref('int_controller_readings') }}

),

{% if is_incremental() %}

new_readings as (

    select * from {{ new_rows('int_controller_readings') }}

),

changed_pumps as (

    select
        pump_id,
        max(case when _is_rederived then 1 else 0 end) as is_rederived
    from new_readings
    group by pump_id

),

-- A pump read after its tail: its old tail (its counters are the last non-null ones) and its
-- new readings. A re-derived pump (rare): all its readings.
candidate_readings as (

    select
        new_readings.pump_id,
        new_readings.observed_at,
        new_readings.last_seen_at,
        new_readings.total_water_delivered,
        new_readings.uptime_seconds,
        new_readings.reading_date as first_reading_date,
        new_readings.reading_date as last_reading_date
    from new_readings
    inner join changed_pumps
        on new_readings.pump_id = changed_pumps.pump_id
    where changed_pumps.is_rederived = 0

    union all

    select
        tails.pump_id,
        tails.last_observed_at,
        tails.last_seen_at,
        tails.last_total_water_delivered,
        tails.last_uptime_seconds,
        tails.first_reading_date,
        tails.last_reading_date
    from {{ this }} as tails
    inner join changed_pumps
        on tails.pump_id = changed_pumps.pump_id
    where changed_pumps.is_rederived = 0

    union all

    select
        readings.pump_id,
        readings.observed_at,
        readings.last_seen_at,
        readings.total_water_delivered,
        readings.uptime_seconds,
        readings.reading_date as first_reading_date,
        readings.reading_date as last_reading_date
    from readings
    inner join changed_pumps
        on readings.pump_id = changed_pumps.pump_id
    where changed_pumps.is_rederived = 1

),

{% else %}

candidate_readings as (

    select
        pump_id,
        observed_at,
        last_seen_at,
        total_water_delivered,
        uptime_seconds,
        reading_date as first_reading_date,
        reading_date as last_reading_date
    from readings

),

{% endif %}

ranked as (

    select
        *,
        row_number() over (
            partition by pump_id
            order by observed_at desc, last_seen_at desc
        ) as recency,
        row_number() over (
            partition by pump_id, total_water_delivered is null
            order by observed_at desc, last_seen_at desc
        ) as total_recency,
        row_number() over (
            partition by pump_id, uptime_seconds is null
            order by observed_at desc, last_seen_at desc
        ) as uptime_recency
    from candidate_readings

),

tails as (

    select
        pump_id,
        max(case when recency = 1 then observed_at end) as last_observed_at,
        max(case when recency = 1 then last_seen_at end) as last_seen_at,
        max(case when total_recency = 1 then total_water_delivered end)
            as last_total_water_delivered,
        max(case when uptime_recency = 1 then uptime_seconds end) as last_uptime_seconds,
        min(first_reading_date) as first_reading_date,
        max(last_reading_date) as last_reading_date,
        cast({{ build_id }} as bigint) as _build_id
    from ranked
    group by pump_id

)

select * from tails

-- One row per day (in the configured time zone), from the first sync's day to the last data.
-- materialized: table (a few hundred rows a year: rebuilt whole by every build)

with recursive

snapshots as (

    select * from {{ ref('stg_fleet_snapshots') }}

),

reading_tails as (

    select * from {{ ref('int_controller_reading_tails') }}

),

snapshot_bounds as (

    select
        min({{ local_date('snapshot_at') }}) as first_date,
        max({{ local_date('snapshot_at') }}) as last_date
    from snapshots

),

reading_bounds as (

    select max(last_reading_date) as last_date
    from reading_tails

),

bounds as (

    select
        snapshot_bounds.first_date,
        -- a device clock ahead of the portal can date a reading after the latest sync
        greatest(
            snapshot_bounds.last_date,
            coalesce(reading_bounds.last_date, snapshot_bounds.last_date)
        ) as last_date
    from snapshot_bounds
    cross join reading_bounds
    where snapshot_bounds.first_date is not null

),

calendar_days as (

    select
        first_date as day_date,
        last_date
    from bounds

    union all

    select
        cast(day_date + interval '1 day' as date) as day_date,
        last_date
    from calendar_days
    where day_date < last_date

),

final as (

    select day_date
    from calendar_days

)

select * from final

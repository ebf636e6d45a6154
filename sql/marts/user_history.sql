-- One row per delegated user per day (in the configured time zone), from the user's first snapshot
-- until today, or until the last day the user was delegated to the integration.
-- materialized: table (as a view: 2.5 s on DuckDB, 6 s on Postgres per query; sql/README.md)

with

days as (

    select * from {{ ref('int_calendar_days') }}

),

user_snapshots as (

    select * from {{ ref('stg_delegated_user_snapshots') }}

),

users as (

    select * from {{ ref('stg_delegated_users') }}

),

links as (

    select * from {{ ref('stg_user_pump_links') }}

),

readings as (

    select * from {{ ref('int_controller_readings') }}

),

latest_sync as (

    select max(snapshot_at) as synced_at
    from user_snapshots

),

user_spans as (

    select
        user_snapshots.user_id,
        min({{ local_date('user_snapshots.snapshot_at') }}) as first_date,
        -- a user missing from the latest sync is no longer delegated: the rows end there
        case
            when max(user_snapshots.snapshot_at) < max(latest_sync.synced_at)
                then max({{ local_date('user_snapshots.snapshot_at') }})
        end as last_date
    from user_snapshots
    cross join latest_sync
    group by user_snapshots.user_id

),

user_days as (

    select
        user_spans.user_id,
        days.day_date
    from user_spans
    inner join days
        on days.day_date >= user_spans.first_date
        and (user_spans.last_date is null or days.day_date <= user_spans.last_date)

),

daily_snapshots as (

    select
        *,
        {{ local_date('snapshot_at') }} as day_date,
        row_number() over (
            partition by user_id, {{ local_date('snapshot_at') }}
            order by snapshot_at desc
        ) as recency_in_day
    from user_snapshots

),

snapshot_days as (

    select
        user_id,
        day_date,
        count(*) as snapshot_count,
        avg(average_battery_soc) as average_battery_soc
    from daily_snapshots
    group by user_id, day_date

),

last_snapshots as (

    select *
    from daily_snapshots
    where recency_in_day = 1

),

-- A pump counts for every day on which the user's link to it was valid for a moment.
linked_days as (

    select
        user_days.user_id,
        user_days.day_date,
        count(distinct links.pump_id) as linked_controllers
    from user_days
    inner join links
        on user_days.user_id = links.user_id
        and {{ local_date('links.linked_at') }} <= user_days.day_date
        and (
            links.unlinked_at is null
            or {{ local_timestamp('links.unlinked_at') }} > cast(user_days.day_date as timestamp)
        )
    group by user_days.user_id, user_days.day_date

),

-- A reading's water goes to the users linked to the pump when the sync read it.
user_readings as (

    select
        links.user_id,
        readings.reading_date as day_date,
        readings.pump_id,
        readings.water_delivered
    from readings
    inner join links
        on readings.pump_id = links.pump_id
        and links.linked_at <= readings.observed_at
        and (links.unlinked_at is null or readings.observed_at < links.unlinked_at)

),

daily_water as (

    select
        user_id,
        day_date,
        count(distinct pump_id) as reporting_controllers,
        sum(water_delivered) as water_delivered
    from user_readings
    group by user_id, day_date

),

final as (

    select
        user_days.user_id,
        user_days.day_date,
        users.user_name,
        coalesce(snapshot_days.snapshot_count, 0) as snapshot_count,
        last_snapshots.total_controllers,
        last_snapshots.active_controllers,
        last_snapshots.offline_controllers,
        coalesce(linked_days.linked_controllers, 0) as linked_controllers,
        coalesce(daily_water.reporting_controllers, 0) as reporting_controllers,
        coalesce(daily_water.water_delivered, 0) as water_delivered,
        snapshot_days.average_battery_soc,
        last_snapshots.wireguard_connections,
        last_snapshots.snapshot_at as last_sync_at
    from user_days
    left join users
        on user_days.user_id = users.user_id
    left join snapshot_days
        on user_days.user_id = snapshot_days.user_id
        and user_days.day_date = snapshot_days.day_date
    left join last_snapshots
        on user_days.user_id = last_snapshots.user_id
        and user_days.day_date = last_snapshots.day_date
    left join linked_days
        on user_days.user_id = linked_days.user_id
        and user_days.day_date = linked_days.day_date
    left join daily_water
        on user_days.user_id = daily_water.user_id
        and user_days.day_date = daily_water.day_date

)

select * from final

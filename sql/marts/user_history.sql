-- One row per delegated user per day (in the configured time zone), from the user's first snapshot
-- until today, or until the last day the user was delegated to the integration.
-- materialized: incremental
-- unique_key: user_id, day_date
--
-- An incremental build recomputes every user from the first day of a new sync (or the days the
-- calendar grew by); a user from the first day its new snapshots, its changed links (and the
-- readings they attribute) or its new name can change; and the users and days new readings of
-- their pumps are dated into (sql/README.md).

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

{% if is_incremental() %}

new_user_snapshots as (

    select * from {{ new_rows('stg_delegated_user_snapshots') }}

),

existing as (

    select * from {{ this }}

),

-- The spans so far, from the rows built (they run from a user's first snapshot's day; the
-- latest one's last sync is its latest snapshot), and the new snapshots: no scan of them all.
snapshot_spans as (

    select
        user_id,
        min(day_date) as first_date,
        max(last_sync_at) as last_snapshot_at
    from existing
    group by user_id

    union all

    select
        user_id,
        min({{ local_date('snapshot_at') }}) as first_date,
        max(snapshot_at) as last_snapshot_at
    from new_user_snapshots
    group by user_id

),

{% else %}

snapshot_spans as (

    select
        user_id,
        min({{ local_date('snapshot_at') }}) as first_date,
        max(snapshot_at) as last_snapshot_at
    from user_snapshots
    group by user_id

),

{% endif %}

latest_sync as (

    select max(last_snapshot_at) as synced_at
    from snapshot_spans

),

user_spans as (

    select
        snapshot_spans.user_id,
        min(snapshot_spans.first_date) as first_date,
        -- a user missing from the latest sync is no longer delegated: the rows end there
        case
            when max(snapshot_spans.last_snapshot_at) < max(latest_sync.synced_at)
                then {{ local_date('max(snapshot_spans.last_snapshot_at)') }}
        end as last_date
    from snapshot_spans
    cross join latest_sync
    group by snapshot_spans.user_id

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

{% if is_incremental() %}

observed_days as (

    select * from {{ ref('int_controller_observed_days') }}

),

new_readings as (

    select * from {{ new_rows('int_controller_readings') }}

),

new_links as (

    select * from {{ new_rows('stg_user_pump_links') }}

),

existing_spans as (

    select
        user_id,
        min(day_date) as first_date,
        max(day_date) as last_date
    from existing
    group by user_id

),

-- Every user changes from the first day of a new sync on (a user missing from it ends there),
-- and gets the days the calendar grew by.
fleet_from as (

    select
        least(
            (select min({{ local_date('snapshot_at') }}) from new_user_snapshots),
            (select cast(max(day_date) + interval '1 day' as date) from existing)
        ) as from_date

),

-- A linked pump's readings count from the link's day on; a reading observed while linked can be
-- dated into any day since the earliest reading day of the days it was observed on.
link_changes as (

    select
        new_links.user_id,
        least(
            min({{ local_date('new_links.linked_at') }}),
            min(observed_days.first_reading_date)
        ) as from_date
    from new_links
    left join observed_days
        on new_links.pump_id = observed_days.pump_id
        and observed_days.observed_date >= {{ local_date('new_links.linked_at') }}
    group by new_links.user_id

),

-- A user that came back after missing syncs gets its gap days again.
user_change_dates as (

    select
        new_user_snapshots.user_id,
        least(
            min({{ local_date('new_user_snapshots.snapshot_at') }}),
            min(cast(existing_spans.last_date + interval '1 day' as date))
        ) as from_date
    from new_user_snapshots
    left join existing_spans
        on new_user_snapshots.user_id = existing_spans.user_id
    group by new_user_snapshots.user_id

    union all

    select
        user_id,
        from_date
    from link_changes

    union all

    -- a renamed user: every row carries the name
    select
        users.user_id,
        min(existing.day_date) as from_date
    from users
    inner join existing
        on users.user_id = existing.user_id
    where users.user_name is distinct from existing.user_name
    group by users.user_id

),

user_from as (

    select
        user_spans.user_id,
        least(min(fleet_from.from_date), min(user_change_dates.from_date)) as from_date
    from user_spans
    cross join fleet_from
    left join user_change_dates
        on user_spans.user_id = user_change_dates.user_id
    group by user_spans.user_id

),

-- The days new readings are dated into, for every user ever linked to their pump.
reading_days as (

    select distinct
        links.user_id,
        new_readings.reading_date as day_date
    from new_readings
    inner join links
        on new_readings.pump_id = links.pump_id

),

scope_keys as (

    select
        user_days.user_id,
        user_days.day_date
    from user_days
    inner join user_from
        on user_days.user_id = user_from.user_id
    where user_days.day_date >= user_from.from_date

    union

    select
        user_days.user_id,
        user_days.day_date
    from user_days
    inner join reading_days
        on user_days.user_id = reading_days.user_id
        and user_days.day_date = reading_days.day_date

),

scope as (

    select * from scope_keys

),

{% else %}

scope as (

    select * from user_days

),

{% endif %}

scope_snapshots as (

    select user_snapshots.*
    from user_snapshots
    inner join scope
        on user_snapshots.user_id = scope.user_id
        and {{ local_date('user_snapshots.snapshot_at') }} = scope.day_date
    -- from the scope's first local midnight on: a range, not every snapshot
    where
        user_snapshots.snapshot_at
        >= {{ local_timestamp('cast((select min(day_date) from scope) as timestamp)') }}

),

daily_snapshots as (

    select
        *,
        {{ local_date('snapshot_at') }} as day_date,
        row_number() over (
            partition by user_id, {{ local_date('snapshot_at') }}
            order by snapshot_at desc
        ) as recency_in_day
    from scope_snapshots

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
        scope.user_id,
        scope.day_date,
        count(distinct links.pump_id) as linked_controllers
    from scope
    inner join links
        on scope.user_id = links.user_id
        and {{ local_date('links.linked_at') }} <= scope.day_date
        and (
            links.unlinked_at is null
            or {{ local_timestamp('links.unlinked_at') }} > cast(scope.day_date as timestamp)
        )
    group by scope.user_id, scope.day_date

),

-- The pump days whose readings the scope needs: a join on the day lets DuckDB skip other days.
scope_pump_days as (

    select distinct
        links.pump_id,
        scope.day_date
    from scope
    inner join links
        on scope.user_id = links.user_id

),

scope_readings as (

    select readings.*
    from readings
    inner join scope_pump_days
        on readings.pump_id = scope_pump_days.pump_id
        and readings.reading_date = scope_pump_days.day_date
    -- a range PostgreSQL seeks in its index (DuckDB skips row groups by the join alone); the
    -- days again as a semi-join, so that an empty scope (a build with nothing new) reads nothing
    -- instead of joining a year of readings before the range's null empties them
    where
        readings.reading_date >= (select min(day_date) from scope_pump_days)
        and readings.reading_date in (select day_date from scope_pump_days)

),

-- A reading's water goes to the users linked to the pump when the sync read it.
user_readings as (

    select
        links.user_id,
        scope_readings.reading_date as day_date,
        scope_readings.pump_id,
        scope_readings.water_delivered
    from scope_readings
    inner join links
        on scope_readings.pump_id = links.pump_id
        and links.linked_at <= scope_readings.observed_at
        and (links.unlinked_at is null or scope_readings.observed_at < links.unlinked_at)
    inner join scope
        on links.user_id = scope.user_id
        and scope_readings.reading_date = scope.day_date

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
        scope.user_id,
        scope.day_date,
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
    from scope
    left join users
        on scope.user_id = users.user_id
    left join snapshot_days
        on scope.user_id = snapshot_days.user_id
        and scope.day_date = snapshot_days.day_date
    left join last_snapshots
        on scope.user_id = last_snapshots.user_id
        and scope.day_date = last_snapshots.day_date
    left join linked_days
        on scope.user_id = linked_days.user_id
        and scope.day_date = linked_days.day_date
    left join daily_water
        on scope.user_id = daily_water.user_id
        and scope.day_date = daily_water.day_date

)

{% if is_incremental() %}

-- Rows in a recomputed range that no longer exist: the user is no longer delegated.
, stale_rows as (

    select existing.*
    from existing
    inner join user_from
        on existing.user_id = user_from.user_id
    left join scope
        on existing.user_id = scope.user_id
        and existing.day_date = scope.day_date
    where
        existing.day_date >= user_from.from_date
        and scope.user_id is null

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

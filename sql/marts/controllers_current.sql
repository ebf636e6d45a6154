-- One row per pump the portal ever listed: who sees it, where it is, and its latest state.
-- materialized: table (one row per pump, from current-state tables: milliseconds to rebuild)

with

controllers as (

    select * from {{ ref('stg_controllers') }}

),

visibility as (

    select * from {{ ref('stg_controller_visibility') }}

),

links as (

    select * from {{ ref('stg_user_pump_links') }}

),

users as (

    select * from {{ ref('stg_delegated_users') }}

),

snapshots as (

    select * from {{ ref('stg_fleet_snapshots') }}

),

latest_sync as (

    select max(snapshot_at) as last_sync_at
    from snapshots

),

visibility_summary as (

    select
        pump_id,
        min(case when is_visible then changed_at end) as first_listed_at,
        max(changed_at) as visibility_changed_at
    from visibility
    group by pump_id

),

current_visibility as (

    select
        visibility_summary.pump_id,
        visibility_summary.first_listed_at,
        visibility.is_visible
    from visibility_summary
    inner join visibility
        on visibility_summary.pump_id = visibility.pump_id
        and visibility_summary.visibility_changed_at = visibility.changed_at

),

current_links as (

    select
        pump_id,
        count(*) as user_count,
        min(case when is_owner then user_id end) as owner_user_id,
        -- user_id is never null; "nulls first" only keeps the ordering translatable to BigQuery
        string_agg(cast(user_id as varchar), ',' order by user_id nulls first) as user_ids
    from links
    where unlinked_at is null
    group by pump_id

),

final as (

    select
        -- identity
        controllers.pump_id,
        controllers.controller_name,
        controllers.profile,
        controllers.communication_method,

        -- installation and location
        controllers.installation_name,
        controllers.location_name,
        controllers.latitude,
        controllers.longitude,

        -- owner and users
        controllers.has_delegated_owner,
        current_links.owner_user_id,
        owners.user_name as owner_user_name,
        coalesce(current_links.user_count, 0) as user_count,
        current_links.user_ids,

        -- presence: online = listed and seen within the online threshold before the latest sync
        current_visibility.first_listed_at,
        controllers.last_seen_at,
        controllers.last_heartbeat_at,
        latest_sync.last_sync_at,
        coalesce(current_visibility.is_visible, false) as is_visible,
        coalesce(
            current_visibility.is_visible
            and controllers.last_seen_at >= latest_sync.last_sync_at - {{ online_threshold }},
            false
        ) as is_online,

        -- state
        controllers.pump_status,
        controllers.is_running,
        controllers.battery_voltage,
        controllers.battery_soc,
        controllers.battery_current,
        controllers.current_pressure,
        controllers.active_alarms_count,
        controllers.highest_alarm_level,

        -- lifetime totals (units are the API's)
        controllers.total_water_delivered,
        controllers.total_sessions,
        controllers.uptime_seconds,

        controllers.changed_at
    from controllers
    cross join latest_sync
    left join current_visibility
        on controllers.pump_id = current_visibility.pump_id
    left join current_links
        on controllers.pump_id = current_links.pump_id
    left join users as owners
        on current_links.owner_user_id = owners.user_id

)

select * from final

-- One row per delegated user per sync: that user's statistics at the sync's time.

with

source as (

    select * from {{ source('delegated_user_snapshots') }}

),

renamed as (

    select
        -- ids
        user_id,

        -- text
        name as user_name,

        -- numerics
        total_controllers,
        active_controllers,
        offline_controllers,
        total_water_delivered,
        average_battery_soc,
        wireguard_connections,

        -- timestamps
        snapshot_at

    from source

)

select * from renamed

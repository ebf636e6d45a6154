-- One row per sync: the portal's fleet-wide statistics at the sync's time (raw `fleet_snapshots`).

with

source as (

    select * from {{ source('fleet_snapshots') }}

),

renamed as (

    select
        -- text
        source_endpoint,

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

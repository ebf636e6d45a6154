-- One row per delegated user the portal ever listed: the latest statistics of that user's pumps.

with

source as (

    select * from {{ source('delegated_users') }}

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
        listed_at

    from source

)

select * from renamed

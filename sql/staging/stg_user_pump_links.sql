-- One row per period in which a delegated user saw a pump (unlinked_at is null while current).

with

source as (

    select * from {{ source('user_pump_links') }}

),

renamed as (

    select
        -- ids
        user_id,
        pump_id,

        -- booleans
        is_owner,

        -- timestamps: the syncs that first saw the link and first missed it
        valid_from as linked_at,
        valid_to as unlinked_at

    from source

)

select * from renamed

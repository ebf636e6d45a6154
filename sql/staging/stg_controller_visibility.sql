-- One row per change of a pump's presence in the listing: first listed, vanished, listed again.

with

source as (

    select * from {{ source('controller_visibility') }}

),

renamed as (

    select
        pump_id,
        is_visible,
        changed_at

    from source

)

select * from renamed

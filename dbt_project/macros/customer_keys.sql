{#- Every accepted account with its customer's customer_key (and any other
    columns of int_accounts_rolled_up_to_customers named in `columns`): the
    monthly aggregates join their rows to it, so they group by the integer key. -#}
{% macro accounts_with_customer_key(columns=[]) -%}
    select accounts.account_id, customers.customer_key
        {%- for column in columns %}, customers.{{ column }}{% endfor %}
    from {{ ref('stg_broker__accounts') }} as accounts
    inner join {{ ref('int_accounts_rolled_up_to_customers') }} as customers
        on accounts.customer_id = customers.customer_id
{%- endmacro %}

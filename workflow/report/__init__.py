"""The HTML report and the README's tables: what every report stage shares.

`render`: the jinja environment (autoescape on), the page shell's static scripts and styles
inlined into each page, number formatting and the cell types of tables. `sections`: the report
page's section builders (parsed inputs in, plain data out). `feature_data`: the feature pages'
and sentence view's data files. `summary`: the README's markdown tables of a finished study
(``python -m workflow summary``). Templates are in ``templates/``, scripts and styles in
``static/``.
"""

"""The HTML report, its figures and the README's tables: what every report stage shares.

`render`: the jinja environment (autoescape on), the page shell's static scripts and styles
inlined into each page, number formatting and the cell types of tables. `inputs`: a report
page's input files parsed; `page`: the report folder (plots copied, each section's context,
summary.json); `sections` and the `*_sections` modules: the section builders (parsed inputs in,
plain data out). `feature_data`: the feature pages' and sentence view's data files;
`heads_viewer`: the attention-pattern page's data. `figures/`: every plot, one module per topic.
`summary`: the README's markdown tables of a finished study (``python -m workflow summary``).
Templates are in ``templates/``, scripts and styles in ``static/``.
"""

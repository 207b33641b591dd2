"""Drop repeated inline scripts from each page.

sphinx-thebe 0.3.1 and sphinx-togglebutton add their inline configuration scripts
(``const THEBE_JS_URL = ...``) once when Sphinx starts and once more when Jupyter Book
1.x re-registers them (once with ``filename=None``, once with ``""``), so every page
declared the constant twice and the browser reported a SyntaxError.
"""

from sphinx.application import Sphinx


def keep_first_of_each_script(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", keep_first_of_each_script, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

/**
 * A code editor (CodeMirror 6) for the Files tab: line numbers, undo
 * history, search (Mod-f), bracket matching, and Mod-s to save. Controlled
 * loosely: `value` seeds the document (and replaces it when it changes from
 * outside, e.g. a reload); edits are reported through `onChange`.
 */
import { useEffect, useRef } from "react";
import { basicSetup } from "codemirror";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";

export function CodeEditor(props: { value: string; onChange: (text: string) => void; onSave?: () => void; readOnly?: boolean; ariaLabel: string }) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  // The latest callbacks, read by the editor's extensions (made once).
  const latest = useRef(props);
  latest.current = props;

  useEffect(() => {
    const v = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: props.value,
        extensions: [
          keymap.of([{ key: "Mod-s", preventDefault: true, run: () => (latest.current.onSave?.(), true) }]),
          basicSetup,
          EditorState.readOnly.of(props.readOnly ?? false),
          EditorView.editable.of(!props.readOnly),
          EditorView.contentAttributes.of({ "aria-label": props.ariaLabel, "aria-multiline": "true", ...(props.readOnly ? { "aria-readonly": "true" } : {}) }),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) latest.current.onChange(u.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = v;
    return () => {
      v.destroy();
      view.current = null;
    };
    // Made once per mount: the label and read-only state do not change while it is open.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  // A new value from outside (a reload) replaces the document; the editor's own edits come back equal.
  useEffect(() => {
    const v = view.current;
    if (!v || v.state.doc.toString() === props.value) return;
    v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: props.value } });
  }, [props.value]);

  return <div className="code-editor mono" ref={host} data-testid="code-editor" />;
}

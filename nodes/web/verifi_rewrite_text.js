// Shows the VERIFI Rewrite node's rewritten text on the node: the node returns it as the standard
// {"ui": {"text": [...]}} output, the same one stock Preview Any displays (Comfy.PreviewAny extension).
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

app.registerExtension({
  name: "UniFusion.VERIFIRewriteText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "UniFusionVERIFIRewrite") return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, []);
      const widget = ComfyWidgets["STRING"](this, "rewritten", ["STRING", { multiline: true }], app).widget;
      widget.element.readOnly = true;
      widget.serialize = false;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, [message]);
      const widget = this.widgets?.find((w) => w.name === "rewritten");
      if (widget && message?.text) widget.value = message.text[0];
    };
  },
});

"""Episodes with pictures (the OpenCV tools, text_to_image), requests that need no tool, and tools
the adapter never saw (described in the prompt), so it still reads a description when it must."""

from __future__ import annotations

import random

from agentd.tool_use.scenarios import Call, Episode, file_id, obs, pick


def _picture(rng: random.Random) -> tuple[str, str]:
    """A picture the user sent (as the server shows it to the agent) and its id."""
    fid = file_id(rng)
    # An uploaded picture is as often named by its bare id: that id is an image, not a data set.
    return pick(rng, f"[image {fid}]", f"the photo {fid}", f"picture {fid}", f"my image {fid}", fid, fid, fid), fid


def _made(rng: random.Random, width: int, height: int, mime: str = "image/png") -> tuple[str, str]:
    fid = file_id(rng)
    return fid, f"[image {fid}: {mime} {width}x{height}, {rng.randint(300, 90000)} bytes]"


def vision(rng: random.Random) -> Episode:
    said, fid = _picture(rng)
    w, h = rng.choice([(640, 480), (1024, 768), (800, 600), (320, 240), (1920, 1080)])
    kind = rng.choice(["stats", "resize", "rotate", "crop", "convert", "gray", "edges", "faces"])
    if kind == "stats":
        text = pick(rng, f"How big is {said}?", f"Tell me the dimensions and brightness of {said}.",
                    f"what resolution is {said}", f"Describe the size and colours of {said}.",
                    f"What are the width and height of {said}?", f"Give me the pixel size of {said}.",
                    f"how bright is {said}?", f"Measure {said} for me.")
        mean = round(rng.uniform(40, 200), 3)
        result = obs({"width": w, "height": h, "mode": "RGB", "format": "image/png", "pixels": w * h,
                      "channels": {c: {"mean": mean, "std": 50.1, "min": 0, "max": 255} for c in "RGB"}})
        return Episode("image_stats", text, [Call("image_stats", {"image": fid}, result, "Measure the picture.")],
                       f"The picture is {w}x{h} pixels, mean brightness about {mean:.0f}.")
    if kind == "resize":
        width = rng.choice([100, 200, 256, 300, 512, 800])
        text = pick(rng, f"Shrink {said} down to {width} pixels in width.", f"make {said} {width}px across",
                    f"Scale {said} down to a width of {width}.", f"resize {said}: width {width}",
                    f"I need {said} at {width} px wide.", f"Make {said} smaller, {width} pixels across.")
        made, result = _made(rng, width, round(h * width / w))
        call = Call("resize_image", {"image": fid, "width": width}, result, "Resize the picture.")
        return Episode("resize_image", text, [call], f"Here it is at {width} pixels wide: {made}.")
    if kind == "rotate":
        degrees, words = rng.choice([(90, "a quarter turn to the left"), (-90, "90 degrees clockwise"),
                                     (180, "upside down"), (45, "45 degrees counter-clockwise"), (-30, "30° clockwise")])
        text = pick(rng, f"Please turn {said} {words}.", f"rotate {said} {words}", f"Can you spin {said} {words}?")
        made, result = _made(rng, h if abs(degrees) == 90 else w, w if abs(degrees) == 90 else h)
        return Episode("rotate_image", text, [Call("rotate_image", {"image": fid, "degrees": degrees}, result,
                                                   "Rotate the picture.")], f"Rotated {words}: {made}.")
    if kind == "crop":
        x, y, cw, ch = rng.randint(0, 100), rng.randint(0, 100), rng.randint(50, 300), rng.randint(50, 300)
        text = pick(rng, f"Cut out the region x={x}, y={y}, {cw} wide and {ch} high from {said}.",
                    f"crop {said} to a {cw}x{ch} box starting at ({x}, {y})",
                    f"Trim {said} to the {cw} by {ch} area at x {x}, y {y}.",
                    f"Keep only the part of {said} from ({x}, {y}), {cw} wide, {ch} tall.")
        made, result = _made(rng, cw, ch)
        return Episode("crop_image", text, [Call("crop_image", {"image": fid, "x": x, "y": y, "width": cw,
                                                                "height": ch}, result, "Crop it.")],
                       f"Cropped: {made}.")
    if kind == "convert":
        fmt = rng.choice(["jpeg", "webp", "bmp", "png"])
        text = pick(rng, f"Save {said} as a {fmt.upper()} file.", f"convert {said} to {fmt}",
                    f"I need {said} in {fmt} format.", f"Export {said} to {fmt.upper()}.",
                    f"change the file type of {said} to {fmt}")
        made, result = _made(rng, w, h, f"image/{fmt}")
        return Episode("convert_image", text, [Call("convert_image", {"image": fid, "format": fmt}, result,
                                                    "Convert the format.")], f"Converted to {fmt}: {made}.")
    if kind == "gray":
        text = pick(rng, f"Make {said} black and white.", f"turn {said} grayscale", f"Remove the colour from {said}.",
                    f"Give me a greyscale version of {said}.", f"desaturate {said}")
        made, result = _made(rng, w, h)
        return Episode("convert_image", text, [Call("convert_image", {"image": fid, "grayscale": True}, result,
                                                    "Convert to grayscale.")], f"Black and white version: {made}.")
    if kind == "edges":
        text = pick(rng, f"Show me the outlines in {said}.", f"edge-detect {said}", f"Trace the contours of {said}.",
                    f"Run edge detection on {said}.", f"Where are the edges in {said}?",
                    f"Highlight the shape boundaries in {said}.")
        made, image = _made(rng, w, h)
        fraction = round(rng.uniform(0.01, 0.2), 4)
        result = obs({"edge_fraction": fraction, "width": w, "height": h}) + "\n" + image
        return Episode("detect_edges", text, [Call("detect_edges", {"image": fid}, result, "Detect edges.")],
                       f"The edges ({fraction:.1%} of the pixels): {made}.")
    count = rng.randint(0, 4)
    boxes = [{"x": rng.randint(0, w - 120), "y": rng.randint(0, h - 120), "width": 100, "height": 100}
             for _ in range(count)]
    text = pick(rng, f"How many people are in {said}?", f"Find the faces in {said}.", f"count faces: {said}",
                f"Is anyone's face visible in {said}?",
                    f"Are there people in {said}?", f"Detect faces in {said}.", f"who is in {said}, how many faces?",
                    f"Does {said} show any person?")
    made, image = _made(rng, w, h)
    result = obs({"faces": count, "boxes": boxes, "image": {"width": w, "height": h}}) + "\n" + image
    return Episode("detect_faces", text, [Call("detect_faces", {"image": fid}, result, "Detect faces.")],
                   f"I found {count} face{'s' if count != 1 else ''}; the framed copy: {made}.")


def faces_then_crop(rng: random.Random) -> Episode:
    said, fid = _picture(rng)
    box = {"x": rng.randint(10, 300), "y": rng.randint(10, 200), "width": rng.randint(60, 160), "height": 0}
    box["height"] = box["width"]
    made, image = _made(rng, 640, 480)
    found = obs({"faces": 1, "boxes": [box], "image": {"width": 640, "height": 480}}) + "\n" + image
    text = pick(rng, f"Find the face in {said} and cut it out.", f"crop {said} to just the person's face")
    crop, cropped = _made(rng, box["width"], box["height"])
    calls = [Call("detect_faces", {"image": fid}, found, "Find the face first."),
             Call("crop_image", {"image": fid, **box}, cropped, "Crop to the face box.")]
    return Episode("faces_crop", text, calls, f"Here is the face: {crop}.", plannable=False)


PICTURES = ["a lighthouse at dusk", "a red bicycle leaning on a wall", "a cat wearing sunglasses", "a snowy forest",
            "an astronaut riding a horse", "a bowl of ramen", "a watercolour of a harbour", "a robot reading a book",
            "a green tractor in a field", "a dog in a raincoat", "a cup of coffee on a desk", "a mountain lake at sunrise",
            "a sailing boat", "a plate of sushi", "a paper airplane", "an owl on a branch"]


def text_to_image(rng: random.Random) -> Episode:
    subject = rng.choice(PICTURES)
    arguments: dict = {"prompt": subject}
    options = ""
    size = rng.choice([None, None, 256, 384, 640, 768, 1024])
    if size:
        arguments.update(width=size, height=size)
        options += pick(rng, f", {size} by {size}", f" at {size}x{size}", f", {size} pixels square", f" ({size}x{size} px)")
    if rng.random() < 0.3:
        arguments["seed"] = rng.randint(1, 9999)
        options += pick(rng, f", seed {arguments['seed']}", f" with seed {arguments['seed']}",
                        f", random seed {arguments['seed']}")
    if rng.random() < 0.15:
        arguments["steps"] = rng.choice([10, 30, 40, 50])
        options += f", {arguments['steps']} steps"
    if rng.random() < 0.15:
        avoid = rng.choice(["people", "text", "blur"])
        arguments["negative_prompt"] = avoid
        options += pick(rng, f", no {avoid}", f", without any {avoid}")
    text = pick(rng, f"Draw {subject}{options}.", f"Generate a picture of {subject}{options}",
                f"can you paint {subject}{options}?", f"Make me an image{options}: {subject}.",
                f"I'd like an illustration of {subject}{options}.", f"Create artwork showing {subject}{options}.",
                f"Render {subject} as an image{options}.", f"Please produce a picture: {subject}{options}.",
                f"I want a picture of {subject} for my slides{options}.", f"Sketch {subject}{options}.")
    made, result = _made(rng, arguments.get("width", 512), arguments.get("height", 512))
    return Episode("text_to_image", text, [Call("text_to_image", arguments, result, "Draw it.")],
                   f"Here is {subject}: {made}.")


def draw_then_rotate(rng: random.Random) -> Episode:
    subject = rng.choice(PICTURES)
    made, result = _made(rng, 512, 512)
    turned, turned_result = _made(rng, 512, 512)
    text = pick(rng, f"Paint {subject}, then turn it upside down.", f"generate {subject} and rotate it 180 degrees")
    calls = [Call("text_to_image", {"prompt": subject}, result, "Draw it first."),
             Call("rotate_image", {"image": made, "degrees": 180}, turned_result, "Rotate the new picture.",
                  {"image": "#E1", "degrees": 180})]
    return Episode("draw_rotate", text, calls, f"Here it is, upside down: {turned}.")


def no_tool(rng: random.Random) -> Episode:
    text, answer = rng.choice([
        ("hello!", "Hello! I can fine-tune, evaluate and deploy models, do arithmetic, run Python, search your "
                   "documents and work with pictures. What would you like to do?"),
        ("What can you do?", "I can fine-tune and evaluate models, deploy them, run Python, calculate, search your "
                             "documents, edit and generate pictures."),
        ("thanks, that's all", "You're welcome!"),
        ("Who are you?", "I am agentd's assistant: I plan and call tools to train, evaluate and deploy models."),
        ("good morning", "Good morning! How can I help?"),
        ("ok great", "Glad it helped. Anything else?"),
        ("Say hi in French.", "Bonjour !"),
        ("What is the capital of France?", "Paris."),
        ("Hi there", "Hi! What can I do for you?"),
        ("Thank you so much!", "You're welcome."),
        ("bye", "Goodbye!"),
        ("How are you today?", "I'm fine, thanks. What would you like to do?"),
        ("What does GPU stand for?", "Graphics processing unit."),
        ("What does CPU stand for?", "Central processing unit."),
        ("What does RAM mean?", "Random-access memory: the computer's working memory."),
        ("What is an epoch in training?", "One full pass of the training data through the model."),
        ("Explain in a sentence what a language model is.",
         "A model that predicts the next word, trained on large amounts of text."),
        ("What is LoRA, briefly?", "Low-Rank Adaptation: fine-tuning small added matrices instead of all the weights."),
        ("Translate 'thank you' into German.", "Danke."),
        ("How do you say 'good night' in Spanish?", "Buenas noches."),
        ("Tell me a short joke.", "Why did the model overfit? It memorised the punchline."),
        ("Nice work.", "Thanks!"),
        ("Can you help me?", "Yes: tell me what you need - training, evaluation, deployment, code, maths or pictures."),
        ("What colour is the sky on a clear day?", "Blue."),
        ("What is overfitting, in one line?", "When a model learns its training data too well and does worse on new data."),
        # Questions a tool cannot help with, said the way people say them: the answer is written directly.
        ("Hey, what are you?", "I am agentd's assistant: I call tools to train, evaluate, deploy and run models."),
        ("Hello, can you introduce yourself?", "Hi! I'm agentd's assistant. I fine-tune, evaluate and deploy models, "
                                               "calculate, run Python, search documents and work with images."),
        ("What does API stand for?", "Application programming interface."),
        ("What does JSON stand for?", "JavaScript Object Notation."),
        ("What does LLM mean?", "Large language model."),
        ("What does SQL stand for?", "Structured Query Language."),
        ("What does the acronym HTTP mean?", "Hypertext Transfer Protocol."),
        ("What do the letters CSV stand for?", "Comma-separated values."),
        ("Greet me in Italian.", "Ciao! / Buongiorno!"),
        ("How do you say 'thank you' in Japanese?", "Arigatou (ありがとう)."),
        ("Say good evening in German.", "Guten Abend!"),
        ("Write 'welcome' in Spanish.", "Bienvenido."),
        ("In a sentence, what is quantization?", "Storing a model's weights with fewer bits (8 or 4) to save memory and time."),
        ("Briefly, what does a tokenizer do?", "It splits text into the tokens (word pieces) a model reads and writes."),
        ("What is a learning rate, in short?", "How big a step the optimizer takes when it updates the weights."),
        ("Describe inference in one line.", "Running a trained model to get its outputs for new inputs."),
        ("What's a benchmark, in one sentence?", "A fixed set of tasks used to measure and compare models."),
        ("What is the difference between LoRA and full fine-tuning, briefly?",
         "LoRA trains small added matrices; full fine-tuning updates every weight."),
        ("Define a checkpoint in model training.", "A saved copy of the weights (and optimizer state) at some step."),
        ("Who wrote Romeo and Juliet?", "William Shakespeare."),
        ("How many days are in a week?", "Seven."),
        ("Give me a synonym for 'fast'.", "Quick."),
        ("Thanks a lot, goodbye!", "You're welcome. Goodbye!"),
        ("Good afternoon!", "Good afternoon! What can I do for you?"),
    ])
    return Episode("no_tool", text, [], answer, plannable=False)


CUSTOM_TOOLS = {
    "get_weather": ("Current weather for a city.", {"city": {"type": "string"}}),
    "convert_currency": ("Convert an amount between currencies.", {
        "amount": {"type": "number"}, "from_currency": {"type": "string"}, "to_currency": {"type": "string"}}),
    "lookup_order": ("Look up a shop order by its number.", {"order_id": {"type": "string"}}),
    "translate": ("Translate text into another language.", {"text": {"type": "string"},
                                                            "target_language": {"type": "string"}}),
}


def _definition(name: str) -> dict:
    description, properties = CUSTOM_TOOLS[name]
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


def custom_tool(rng: random.Random) -> Episode:
    name = rng.choice(list(CUSTOM_TOOLS))
    if name == "get_weather":
        city = rng.choice(["Oslo", "Lima", "Nairobi", "Osaka", "Porto"])
        text, arguments = pick(rng, f"Is it raining in {city}?", f"weather in {city} now?"), {"city": city}
        result, answer = obs({"city": city, "temp_c": 14, "sky": "light rain"}), f"{city}: 14 °C, light rain."
    elif name == "convert_currency":
        amount = rng.randint(5, 900)
        text = pick(rng, f"How many yen is {amount} euros?", f"convert {amount} EUR to JPY")
        arguments = {"amount": amount, "from_currency": "EUR", "to_currency": "JPY"}
        result, answer = obs({"amount": amount * 162}), f"{amount} EUR is about {amount * 162} JPY."
    elif name == "lookup_order":
        order = f"A{rng.randint(1000, 9999)}"
        text, arguments = pick(rng, f"Where is my order {order}?", f"status of order {order}"), {"order_id": order}
        result, answer = obs({"order_id": order, "status": "shipped"}), f"Order {order} has shipped."
    else:
        phrase = rng.choice(["good night", "where is the station", "thank you very much"])
        text = pick(rng, f"Translate '{phrase}' into Spanish.", f"how do you say '{phrase}' in Spanish")
        arguments = {"text": phrase, "target_language": "Spanish"}
        result, answer = obs({"translation": "(translated)"}), "In Spanish: (translated)"
    return Episode("custom_tool", text, [Call(name, arguments, result, f"Use {name}.")], answer,
                   extra_tools=[_definition(name)])

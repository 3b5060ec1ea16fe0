"""The chain's own decisions, on hand-written answers: placing events and validating the draft script."""

from __future__ import annotations

from v2t_foley.foley_core.chain.steps import events_json, place_events, validate
from v2t_foley.foley_core.schema import Event, EventReasoning, IdentifyAnswer, SynthesisAnswer


def test_events_are_swapped_clamped_dropped_and_sorted():
    answer = IdentifyAnswer.model_validate(
        {
            "events": [
                {"start": 6.0, "end": 5.0, "what": "door\tcloses"},
                {"start": 9.5, "end": 14.0, "what": "car passes"},
                {"start": 12.0, "end": 13.0, "what": "after the end"},
                {"start": 0.0, "end": 1.0, "what": "step"},
            ]
        }
    )
    events, notes = place_events(answer, duration=10.0)
    assert [(e.index, e.start, e.end, e.summary) for e in events] == [
        (0, 0.0, 1.0, "step"),
        (1, 5.0, 6.0, "door closes"),
        (2, 9.5, 10.0, "car passes"),
    ]
    assert any("swapped" in n for n in notes)
    assert any("clamped to the video's end" in n for n in notes)
    assert any("outside the video" in n and "dropped" in n for n in notes)


def _draft(**tracks) -> SynthesisAnswer:
    return SynthesisAnswer.model_validate(tracks)


EVENTS = [
    Event(index=0, start=1.0, end=2.0, summary="a"),
    Event(index=1, start=3.0, end=3.5, summary="b", onset=3.1),
]


def test_validate_links_clamps_and_merges():
    draft = _draft(
        foley=[
            {"event": 1, "start": 3.0, "end": 3.4, "description": "Glass set down."},
            {"event": 0, "start": 1.0, "end": 1.5, "description": "Footstep."},
            {"event": 0, "start": 1.0, "end": 1.5, "description": "footstep. "},
        ],
        fx=[{"event": 7, "start": 2.0, "end": 1.0, "description": "Thud."}],
        ambience=[{"event": -1, "start": 0.0, "end": 99.0, "description": "Room tone."}],
        dialogue=[
            {"event": 0, "start": 11.0, "end": 12.0, "description": "Too late."},
            {"event": 0, "start": 1.0, "end": 2.0, "description": " \t "},
        ],
    )
    result = validate(draft, EVENTS, duration=10.0)
    script = result.value
    assert [(c.start, c.event) for c in script.foley] == [(1.0, 0), (3.0, 1)]
    assert [(c.start, c.end, c.event) for c in script.fx] == [(1.0, 2.0, None)]
    assert (script.ambience[0].end, script.ambience[0].timestamp) == (10.0, "00:00")
    assert script.dialogue == []
    notes = " | ".join(result.notes)
    for expected in (
        "unknown event 7",
        "swapped",
        "clamped",
        "outside the video",
        "blank description",
        "merged 1 duplicate",
    ):
        assert expected in notes


def test_measured_timing_takes_the_event_window():
    draft = _draft(
        fx=[{"event": 1, "start": 0.0, "end": 0.1, "description": "Click."}],
        ambience=[{"event": -1, "start": 0.0, "end": 4.0, "description": "Hum."}],
    )
    script = validate(draft, EVENTS, duration=10.0, timing="measured").value
    assert (script.fx[0].start, script.fx[0].end) == (3.1, 3.5)  # snapped to the onset
    assert (script.ambience[0].start, script.ambience[0].end) == (0.0, 4.0)  # unlinked: the model's times


def test_events_json_merges_reasoning():
    reasoning = [
        EventReasoning(event=1, main_object="glass", action="set down", context="table", sounds=["clink"])
    ]
    text = events_json(EVENTS, reasoning)
    assert '"event":0,"start":1.0,"end":2.0,"what":"a"}' in text
    assert '"main_object":"glass"' in text and '"sounds":["clink"]' in text


def test_measured_ambience_spans_shots_and_dialogue_follows_speech():
    draft = _draft(
        ambience=[{"event": 1, "start": 0.0, "end": 0.1, "description": "Hum."}],
        dialogue=[{"event": -1, "start": 6.2, "end": 6.3, "description": "A voice."}],
    )
    shots, speech = [(0.0, 2.5), (2.5, 10.0)], [(5.9, 7.4)]
    script = validate(draft, EVENTS, duration=10.0, timing="measured", shots=shots, speech=speech).value
    assert (script.ambience[0].start, script.ambience[0].end) == (2.5, 10.0)  # event 1's onset is in shot 2
    assert (script.dialogue[0].start, script.dialogue[0].end) == (5.9, 7.4)


def test_measured_timing_places_an_unlinked_cue_on_the_nearest_event():
    draft = _draft(fx=[{"event": -1, "start": 2.9, "end": 9.0, "description": "Clatter."}])
    result = validate(draft, EVENTS, duration=10.0, timing="measured", shots=[(0.0, 10.0)], speech=[])
    (cue,) = result.value.fx
    assert (cue.start, cue.end, cue.event) == (3.1, 3.5, 1)  # event 1's onset is nearest to 2.9
    assert any("nearest measured event (1)" in note for note in result.notes)

"""Scene replay and knowledge probes: scenes from the test episodes only, turns as the chat sees them, answers mined."""

from rolecast.evaluation.replay import answered, held_out_scenes, knowledge, replay, scene_turns
from rolecast.pack import Pack
from rolecast.pack.examples import SplitOf


def test_scenes_come_from_test_episodes_and_hold_two_turns(sample_pack):
    pack = Pack.open(sample_pack)
    scenes = held_out_scenes(pack, 50, seed=1)
    split_of = SplitOf(pack)
    assert scenes and all(split_of(s["episode"], s["scene"]) == "test" for s in scenes)
    for scene in scenes:
        turns = scene_turns(scene, "Maggie")
        assert 2 <= len(turns) <= 8
        assert all(t["said"] and t["reply"] for t in turns)
    assert held_out_scenes(pack, 3, seed=1) == scenes[:3]


def test_replay_feeds_the_variant_its_own_earlier_replies():
    scene = {"id": "e1/1", "episode": "e1", "scene": "1",
             "lines": [("Ann", "Hi.", 0), ("Maggie", "Real one.", 1), ("Bob", "And?", 2), ("Ann", "Well?", 3),
                       ("Maggie", "Real two.", 4)]}
    seen = []

    def answer(line_id, history, message, real, turn):
        seen.append((line_id, [m["content"] for m in history], message, real))
        return {"reply": f"mine {turn}"}

    rows = replay(scene, "Maggie", answer)
    assert [r["turn"] for r in rows] == [0, 1]
    assert seen[0] == ("e1-1-1", [], "Hi.", "Real one.")
    assert seen[1] == ("e1-1-4", ["Ann: Hi.", "mine 0", "Bob: And?"], "Well?", "Real two."), "own reply, not the real"


def test_knowledge_probes_are_mined_from_the_pack(sample_pack):
    probes = knowledge(Pack.open(sample_pack))
    topics = {p["topic"] for p in probes}
    assert {"name", "people"} <= topics
    name = next(p for p in probes if p["topic"] == "name")
    assert "Maggie" in name["expect"]
    people = next(p for p in probes if p["topic"] == "people")["expect"]
    assert people and "Maggie" not in people
    assert answered("Ask maggie, she knows.", name["expect"])
    assert not answered("Magpies everywhere.", name["expect"])
